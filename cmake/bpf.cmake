# Compiling eBPF C (x.bpf.c) into BPF objects with clang -target bpf, for the examples, the
# tests and the benchmarks.
find_program(BPFTIME_BPF_CLANG NAMES clang clang-14 DOC "clang that targets BPF")
if(NOT BPFTIME_BPF_CLANG)
  message(FATAL_ERROR "bpftime: clang is needed to compile the eBPF examples "
                      "(apt-get install clang, or set BPFTIME_BPF_CLANG to a clang binary)")
endif()

# Flags for every eBPF object of the project. The multiarch folder holds <asm/types.h>,
# which <linux/bpf.h> includes.
set(BPFTIME_BPF_CFLAGS -O2 -g -target bpf -D__TARGET_ARCH_x86
    -I${CMAKE_SOURCE_DIR}/include -I/usr/include/${CMAKE_LIBRARY_ARCHITECTURE}
    CACHE INTERNAL "clang flags for eBPF objects")

# bpftime_add_bpf_objects(<out-dir> <outputs-var> <sources>...): a rule per x.bpf.c that
# builds <out-dir>/x.bpf.o; the object paths go into <outputs-var>. The folder is created here:
# clang does not create it, and only Ninja makes the folders of custom command outputs.
function(bpftime_add_bpf_objects out_dir outputs_var)
  file(MAKE_DIRECTORY ${out_dir})
  set(outputs)
  foreach(src IN LISTS ARGN)
    get_filename_component(name ${src} NAME_WE)
    set(obj ${out_dir}/${name}.bpf.o)
    add_custom_command(
      OUTPUT ${obj}
      COMMAND ${BPFTIME_BPF_CLANG} ${BPFTIME_BPF_CFLAGS} -MD -MF ${obj}.d -c ${src} -o ${obj}
      DEPENDS ${src}
      DEPFILE ${obj}.d
      COMMENT "Compiling eBPF object ${name}.bpf.o"
      VERBATIM)
    list(APPEND outputs ${obj})
  endforeach()
  set(${outputs_var} ${outputs} PARENT_SCOPE)
endfunction()

# bpftime_add_bpf_folder(<target> <folder> <dir-var>): every <folder>/*.bpf.c of the current
# source folder built into the same folder of the build tree; <target> builds them all and
# <dir-var> names the folder they are in.
function(bpftime_add_bpf_folder target folder dir_var)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${folder})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${folder}/*.bpf.c)
  bpftime_add_bpf_objects(${out} objects ${sources})
  add_custom_target(${target} DEPENDS ${objects})
  set(${dir_var} ${out} PARENT_SCOPE)
endfunction()

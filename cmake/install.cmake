# What `cmake --install` puts where (GNUInstallDirs; CMAKE_INSTALL_PREFIX and DESTDIR apply),
# the libraries embedding applications link, find_package(bpftime), libbpftime.pc and the
# Debian package (cpack -G DEB).
#
#   bin/bpftime                                the command line
#   <libdir>/libbpftime.so.<ver>               the C++ API and the C API, one shared library
#   <libdir>/libbpftime_server.so              the C API alone, internals hidden (hosts such as
#                                              the nginx module link it)
#   <libdir>/bpftime/libbpftime_agent.so       preloaded by `bpftime start`
#   <libdir>/bpftime/<interposer>.so           preloaded, when that library is built
#   include/bpftime/                           the public headers
#   <libdir>/cmake/bpftime/                    bpftimeConfig.cmake: bpftime::bpftime, bpftime::server
#   <libdir>/pkgconfig/libbpftime.pc
#   share/bpftime/examples/                    the example eBPF programs, source and compiled
include(CMakePackageConfigHelpers)

# libbpftime.so: every component's static library whole, so an embedder links one library and
# sees the whole public API. LLVM, libbpf, libelf and Zydis are shared libraries it links
# privately: the public headers include none of them, so embedders need neither their headers
# nor their link flags.
set(BPFTIME_LIBRARY_COMPONENTS bpftime_isa bpftime_vm bpftime_maps bpftime_helpers bpftime_store
    bpftime_loader bpftime_attach bpftime_hook bpftime_uprobe bpftime_systp bpftime_manager
    bpftime_provider)
add_library(bpftime_lib SHARED ${CMAKE_SOURCE_DIR}/server/minimal_syscall_server.cpp)
# The archives go in whole ahead of the objects; linked again as ordinary libraries they bring
# their own dependencies and add nothing twice (every member is already in).
set(whole_archive)
foreach(component IN LISTS BPFTIME_LIBRARY_COMPONENTS)
  string(APPEND whole_archive " $<TARGET_FILE:${component}>")
endforeach()
target_link_options(bpftime_lib PRIVATE
                    "SHELL:-Wl,--whole-archive${whole_archive} -Wl,--no-whole-archive")
target_link_libraries(bpftime_lib PRIVATE ${BPFTIME_LIBRARY_COMPONENTS} bpftime_warnings)
set_target_properties(bpftime_lib PROPERTIES
  OUTPUT_NAME bpftime EXPORT_NAME bpftime
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
target_include_directories(bpftime_lib INTERFACE
  $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(bpftime_lib INTERFACE cxx_std_20)
if(NOT BPFTIME_SANITIZE_FLAGS)
  target_link_options(bpftime_lib PRIVATE -Wl,--no-undefined)
endif()
add_library(bpftime::bpftime ALIAS bpftime_lib)

set_target_properties(bpftime_server PROPERTIES EXPORT_NAME server)
target_include_directories(bpftime_server INTERFACE
                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
add_library(bpftime::server ALIAS bpftime_server)

# Installed binaries look for the preloaded libraries relative to their own folder.
target_compile_definitions(bpftime PRIVATE
  BPFTIME_PKGLIBDIR_FROM_BINDIR="${BPFTIME_PKGLIBDIR_FROM_BINDIR}")

install(TARGETS bpftime RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(TARGETS bpftime_agent LIBRARY DESTINATION ${BPFTIME_INSTALL_PKGLIBDIR} COMPONENT runtime)
if(TARGET bpftime_syscall_server)
  install(TARGETS bpftime_syscall_server
          LIBRARY DESTINATION ${BPFTIME_INSTALL_PKGLIBDIR} COMPONENT runtime)
endif()
install(TARGETS bpftime_lib bpftime_server EXPORT bpftimeTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT devel)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/bpftime DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT devel)

set(BPFTIME_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/bpftime)
install(EXPORT bpftimeTargets NAMESPACE bpftime:: DESTINATION ${BPFTIME_INSTALL_CMAKEDIR}
        COMPONENT devel)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/bpftimeConfig.cmake.in
  ${CMAKE_BINARY_DIR}/bpftimeConfig.cmake INSTALL_DESTINATION ${BPFTIME_INSTALL_CMAKEDIR})
# Before 1.0 a minor version may change the API, so only the same minor version matches.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/bpftimeConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/bpftimeConfig.cmake ${CMAKE_BINARY_DIR}/bpftimeConfigVersion.cmake
        DESTINATION ${BPFTIME_INSTALL_CMAKEDIR} COMPONENT devel)

# libbpftime.pc names the prefix the files are installed under, which `cmake --install
# --prefix` and CPack choose at install time: the file is written then.
install(CODE "
  set(BPFTIME_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(PROJECT_VERSION \"${PROJECT_VERSION}\")
  set(CMAKE_INSTALL_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(CMAKE_INSTALL_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  configure_file(\"${CMAKE_CURRENT_LIST_DIR}/libbpftime.pc.in\"
                 \"${CMAKE_BINARY_DIR}/install-pc/libbpftime.pc\" @ONLY)
  file(INSTALL \"${CMAKE_BINARY_DIR}/install-pc/libbpftime.pc\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig\")
" COMPONENT devel)

# The examples: their source and the objects `bpftime load` takes (not under share/doc, which
# minimal systems leave out).
file(GLOB BPFTIME_EXAMPLE_FILES ${CMAKE_SOURCE_DIR}/examples/*.bpf.c
     ${CMAKE_SOURCE_DIR}/examples/*.h ${CMAKE_SOURCE_DIR}/examples/*.s)
set(example_objects)
foreach(src IN LISTS BPFTIME_EXAMPLE_FILES)
  if(src MATCHES "\\.bpf\\.c$")
    get_filename_component(name ${src} NAME_WE)
    list(APPEND example_objects ${BPFTIME_EXAMPLES_DIR}/${name}.bpf.o)
  endif()
endforeach()
install(FILES ${BPFTIME_EXAMPLE_FILES} ${example_objects}
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bpftime/examples COMPONENT runtime)

# The Debian package: every component in one bpftime package (the nginx module's install rules
# included), dependencies from dpkg-shlibdeps.
set(CPACK_PACKAGE_NAME bpftime)
set(CPACK_PACKAGE_VENDOR "bpftime")
set(CPACK_PACKAGE_CONTACT "bpftime maintainers <bpftime@localhost>" CACHE STRING
    "Maintainer field of the Debian package")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "user-space eBPF runtime: uprobes, maps, JIT, nginx filter")
set(CPACK_PACKAGE_DESCRIPTION "bpftime runs eBPF programs inside user-space processes: \
an interpreter and an LLVM JIT, maps in POSIX shared memory, uprobes through a preloaded agent, \
an nginx URL filter and the kernel's eBPF through libbpf, driven by the bpftime command.")
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The nginx module works only in an nginx of the ABI it was built for (nginx/CMakeLists.txt).
if(BPFTIME_ENABLE_NGINX AND BPFTIME_NGINX_ABI)
  set(CPACK_DEBIAN_PACKAGE_DEPENDS "${BPFTIME_NGINX_ABI}")
endif()
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEB_COMPONENT_INSTALL OFF)
# Debian packages install under /usr (configure with -DCMAKE_INSTALL_PREFIX=/usr for the
# multiarch library folder).
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_GENERATOR DEB)
include(CPack)

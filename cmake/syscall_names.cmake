# Writes the x86-64 system call table (name, number) from the kernel's unistd header, as a
# C++ initializer list: cmake -DUNISTD=<header> -DOUT=<file> -P syscall_names.cmake
file(STRINGS "${UNISTD}" lines REGEX "^#define __NR_[a-z0-9_]+ [0-9]+")
set(body "")
foreach(line IN LISTS lines)
  string(REGEX REPLACE "^#define __NR_([a-z0-9_]+) ([0-9]+).*" "{\"\\1\", \\2}," entry "${line}")
  string(APPEND body "    ${entry}\n")
endforeach()
file(WRITE "${OUT}.tmp" "// Generated from ${UNISTD}; do not edit.\n${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)

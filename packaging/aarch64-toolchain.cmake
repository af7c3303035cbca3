# Cross-compiling for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu
# (packaging/aarch64-wheel.sh, tests/cross).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
if(DEFINED ENV{BNORM_AARCH64_SYSROOT})
  # the target's Python headers (Debian's multiarch layout: pyconfig.h under
  # include/aarch64-linux-gnu), from the unpacked libpython3.X-dev:arm64
  set(_sys "$ENV{BNORM_AARCH64_SYSROOT}")
  include_directories(SYSTEM "${_sys}/usr/include")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

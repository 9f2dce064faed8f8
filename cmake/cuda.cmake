# CUDA backend: built when nvcc is found (QKERN_WITH_CUDA=ON, the default).
#
# kernels/cuda/*.cu become an object library linked into both libqkern.so and
# libqkern.a; host/cuda/*.c (plain C calling the kernels' extern "C" launchers
# and the CUDA runtime API) join qkern_obj. The CUDA runtime is linked
# statically (cudart_static), which opens libcuda.so.1 itself at the first call:
# the library loads on a machine with no NVIDIA driver, and the backend answers
# QK_ERR_NO_DEVICE there (README, "Backends").
option(QKERN_WITH_CUDA "Build the CUDA backend when nvcc is found" ON)
set(QKERN_CUDA_ARCHITECTURES "80-real;90-real;90-virtual" CACHE STRING
    "CUDA architectures of the CUDA backend (sm_80 and sm_90 machine code, compute_90 PTX for newer GPUs)")

if(QKERN_WITH_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
  endif()
  if(CMAKE_CUDA_COMPILER AND TARGET CUDA::cudart_static)
    message(STATUS "qkern: CUDA backend enabled (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                   "architectures ${QKERN_CUDA_ARCHITECTURES})")

    file(GLOB QK_CUDA_KERNELS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu)
    file(GLOB QK_CUDA_HOST CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/host/cuda/*.c)

    add_library(qkern_cuda_kernels OBJECT ${QK_CUDA_KERNELS})
    target_include_directories(qkern_cuda_kernels PRIVATE
      ${CMAKE_SOURCE_DIR}/include ${CMAKE_SOURCE_DIR}/host/cuda ${CMAKE_SOURCE_DIR}/kernels/cuda)
    set_target_properties(qkern_cuda_kernels PROPERTIES
      CUDA_ARCHITECTURES "${QKERN_CUDA_ARCHITECTURES}"
      CUDA_STANDARD 17
      CUDA_STANDARD_REQUIRED ON
      CUDA_EXTENSIONS OFF
      CUDA_SEPARABLE_COMPILATION OFF
      CUDA_RUNTIME_LIBRARY Static
      CUDA_VISIBILITY_PRESET hidden
      VISIBILITY_INLINES_HIDDEN ON
      POSITION_INDEPENDENT_CODE ON)
    # Results are defined without FMA contraction and with IEEE division and
    # square root (docs/numerics.md, "Exactness"); no --use_fast_math, no flush to zero.
    # The host side of the .cu files is built warning-clean and without
    # exceptions, RTTI or thread-safe statics, so the objects need no C++
    # runtime (libstdc++) when a C program links libqkern.a. (The one guarded
    # static is nvcc's per-kernel handle in each launch stub; initialised twice
    # by two threads it gets the same value twice.)
    # (This replaces the directory's add_compile_options(), which are gcc's.)
    set_property(TARGET qkern_cuda_kernels PROPERTY COMPILE_OPTIONS
      $<$<COMPILE_LANGUAGE:CUDA>:-fmad=false -prec-div=true -prec-sqrt=true -ftz=false
        -Xcompiler=-Wall,-Wextra,-fno-exceptions,-fno-rtti,-fno-threadsafe-statics,-ffp-contract=off>)
    list(APPEND QKERN_BACKEND_OBJECTS qkern_cuda_kernels)

    target_sources(qkern_obj PRIVATE ${QK_CUDA_HOST})
    target_compile_definitions(qkern_obj PRIVATE QKERN_HAVE_CUDA)
    # What the fat binary holds, so the backend refuses a device it has no code
    # for (host/cuda/cuda_backend.c, cu_arch_supported): "80-real" is machine
    # code, "90-virtual" PTX, a bare "90" both. "native"/"all" cannot be listed.
    set(QK_REAL_ARCHS "")
    set(QK_VIRTUAL_ARCHS "")
    set(QK_ARCHS_KNOWN TRUE)
    foreach(a ${QKERN_CUDA_ARCHITECTURES})
      if(a MATCHES "^([0-9]+)a?-real$")
        list(APPEND QK_REAL_ARCHS ${CMAKE_MATCH_1})
      elseif(a MATCHES "^([0-9]+)a?-virtual$")
        list(APPEND QK_VIRTUAL_ARCHS ${CMAKE_MATCH_1})
      elseif(a MATCHES "^([0-9]+)a?$")
        list(APPEND QK_REAL_ARCHS ${CMAKE_MATCH_1})
        list(APPEND QK_VIRTUAL_ARCHS ${CMAKE_MATCH_1})
      else()
        set(QK_ARCHS_KNOWN FALSE)
      endif()
    endforeach()
    if(QK_ARCHS_KNOWN)
      string(REPLACE ";" "," QK_REAL_ARCHS "${QK_REAL_ARCHS}")
      string(REPLACE ";" "," QK_VIRTUAL_ARCHS "${QK_VIRTUAL_ARCHS}")
      target_compile_definitions(qkern_obj PRIVATE QK_CUDA_REAL_ARCHS="${QK_REAL_ARCHS}"
                                 QK_CUDA_VIRTUAL_ARCHS="${QK_VIRTUAL_ARCHS}")
    endif()
    # The runtime API headers only (no link from an object library).
    target_include_directories(qkern_obj SYSTEM PRIVATE ${CUDAToolkit_INCLUDE_DIRS})

    # The static runtime for both libraries. Installed, the targets name the
    # archive by path (no CUDA:: imported target needed by consumers); the
    # shared library does not re-export cudart's symbols.
    get_target_property(QK_CUDART_STATIC CUDA::cudart_static IMPORTED_LOCATION)
    list(APPEND QKERN_BACKEND_LIBS
      "$<BUILD_INTERFACE:CUDA::cudart_static>"
      "$<INSTALL_INTERFACE:${QK_CUDART_STATIC}>"
      "$<INSTALL_INTERFACE:${CMAKE_DL_LIBS}>"
      "$<INSTALL_INTERFACE:rt>"
      "$<INSTALL_INTERFACE:pthread>")
    if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
      list(APPEND QKERN_BACKEND_LIBS "-Wl,--exclude-libs,libcudart_static.a")
    endif()
    # CMake links anything holding CUDA objects with the C++ compiler, which
    # makes libqkern.so need libstdc++; nothing in it does, so link as C. (The
    # libraries are made after this file is included: set it once they exist.)
    cmake_language(DEFER CALL set_target_properties qkern qkern_static PROPERTIES LINKER_LANGUAGE C)
    string(APPEND QKERN_PC_LIBS_PRIVATE " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt -lpthread")
    list(APPEND QKERN_TEST_BACKENDS cuda)
  elseif(CMAKE_CUDA_COMPILER)
    message(STATUS "qkern: nvcc found but the CUDA toolkit's static runtime is missing: CUDA backend not built")
  else()
    message(STATUS "qkern: nvcc not found: CUDA backend not built")
  endif()
else()
  message(STATUS "qkern: CUDA backend disabled (QKERN_WITH_CUDA=OFF)")
endif()

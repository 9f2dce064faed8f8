# OpenCL backend: built when the OpenCL headers and ICD loader are found.
# (Owned by the OpenCL backend work; until it lands, nothing is added and the
# library reports OpenCL as "not built in".)

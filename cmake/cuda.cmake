# CUDA backend: built when nvcc is found.
# (Owned by the CUDA backend work; until it lands, nothing is added and the
# library reports CUDA as "not built in".)

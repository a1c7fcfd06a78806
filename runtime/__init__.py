"""ocrc.runtime: the machine. Target description, ISA, program file format, integer arithmetic
primitives and the numba virtual machine. Imports nothing from ocrc.compiler or ocrc.frontend."""

"""Native kernels wrapped for Python: validation, allocation and device dispatch."""

"""32-bit ARM (A32) and Thumb-2 patching protocols, one file each."""

"""riscv64 patching protocols, one file each."""

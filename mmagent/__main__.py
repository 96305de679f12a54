"""`python -m mmagent ...` is the `mmagent` command; it is how torchrun starts a data-parallel
training run: `torchrun --nproc-per-node 8 -m mmagent train adapter ...`."""

from mmagent.cli import main

if __name__ == "__main__":
    main()

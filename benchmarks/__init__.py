"""ticketx's benchmarks: its own training path, timed side by side with plain PyTorch.

Run from a checkout: `python -m benchmarks [--quick] [--json] [--only ROWS] [--e2e]`.
They live outside the installed package because they are a developer's tool: they need the
repository (the shared CIFAR-10 archive next to it, torchvision baselines) and time the
library's code paths (`ticketx.train.prepare`, `ticketx.pruning`, `ticketx.ticket`,
`ticketx.search`) rather than carrying copies of them.

  harness   interleaved timing, ratios with bootstrap intervals, goals, the machine, the table
  setups    ticketx's training setup and the plain-PyTorch baselines a row times
  rows      the rows (data, mask, prune, ticket, speed, mfu, threads, parallel) and `run`
  worker    one training process of the parallel row (`python -m benchmarks.worker`)
  e2e       a whole `ticketx find` against the same search as a plain PyTorch loop
"""

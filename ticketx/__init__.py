"""ticketx: lottery-ticket transfer studies.

Find winning tickets by iterative magnitude pruning with rewinding (Frankle & Carbin 2019;
Frankle et al. 2020), transfer them across data sets and optimizers (Morcos et al. 2019), and
compare them against the baselines that make the comparison meaningful.
"""

__version__ = "0.1.0"

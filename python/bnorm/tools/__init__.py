"""The command-line tools behind ``python -m bnorm``: the benchmarks
(``bench``, ``bench --fused``, ``syncbench``), the accuracy report
(``accuracy``) and the demo (``demo``). They use the library; the library
never imports them."""

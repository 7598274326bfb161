"""The fuzz farm: a coordinator that splits campaigns into time-boxed RQ jobs, the workers that
run them, and the nightly corpus replay. Knows Redis/RQ and the database; the engine (fuzzer/)
knows nothing of either."""

"""The fuzz farm (coordinator, RQ jobs, nightly replay). Not built yet: see the open issue
"The fuzz farm"; depends on fuzzer/ and db/ only."""

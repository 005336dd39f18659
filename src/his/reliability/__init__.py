"""What proves the promises under faults: the history checker shared by the fault tests and the soak."""

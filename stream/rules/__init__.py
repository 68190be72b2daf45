"""Pure rule logic (no I/O): each rule is a state machine over event-time samples."""

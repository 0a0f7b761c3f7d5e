package monoclock

const hasTSC = true

// ticks reads the time-stamp counter (RDTSC).
func ticks() int64

//go:build !amd64

package monoclock

const hasTSC = false

func ticks() int64 { return 0 }

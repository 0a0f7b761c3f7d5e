//go:build race

package secret

func init() { raceEnabled = true }

package gateway

// UpstreamPath is the path a match sends upstream, for tests.
func UpstreamPath(m *Match, path string) string { return m.upstreamPath(path) }

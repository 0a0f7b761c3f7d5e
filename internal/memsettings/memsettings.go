// Package memsettings is a store's settings in memory, for the tests of
// the doors that keep state there (the MCP gateway's pins and holds, the
// OAuth authorization server's clients, requests and codes).
package memsettings

import (
	"context"
	"strings"
	"sync"
)

// Store holds settings in a map. Its zero value is ready.
type Store struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *Store) GetSetting(_ context.Context, k string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *Store) PutSettingIfAbsent(_ context.Context, k, v string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[k]; ok {
		return old, nil
	}
	s.put(k, v)
	return v, nil
}

func (s *Store) PutSetting(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(k, v)
	return nil
}

func (s *Store) put(k, v string) {
	if s.m == nil {
		s.m = map[string]string{}
	}
	s.m[k] = v
}

func (s *Store) SettingsWithPrefix(_ context.Context, p string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.m {
		if strings.HasPrefix(k, p) {
			out[k] = v
		}
	}
	return out, nil
}

func (s *Store) DeleteSetting(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

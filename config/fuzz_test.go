package config

import (
	"errors"
	"net/netip"
	"testing"
)

// FuzzParse feeds any file to Parse. It must return a configuration that
// passed validation or a Problems value, never panic.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("error %v is not a list of problems", err)
			}
			for _, p := range ps {
				if p.Message == "" {
					t.Errorf("problem without a message: %+v", p)
				}
			}
			return
		}
		if len(cfg.Listeners) == 0 || len(cfg.Providers) == 0 {
			t.Fatalf("valid config without listeners or providers: %+v", cfg)
		}
		if cfg.Limits.ReadTimeout <= 0 || cfg.Limits.UpstreamTimeout <= 0 || cfg.Limits.DialTimeout <= 0 {
			t.Errorf("valid config with a timeout that is not positive: %+v", cfg.Limits)
		}
		// No valid configuration trusts every address.
		for _, addr := range []string{"192.0.2.1", "2001:db8::1"} {
			if _, ok := cfg.TrustedUser(netip.MustParseAddr(addr)); ok && !trustsNetwork(cfg, addr) {
				t.Errorf("address %s is trusted without a listed network", addr)
			}
		}
	})
}

// trustsNetwork reports whether a network that the file lists covers addr.
func trustsNetwork(cfg *Config, addr string) bool {
	a := netip.MustParseAddr(addr)
	for _, tc := range cfg.TrustedClients {
		for _, n := range tc.Networks {
			if p, err := parsePrefix(n); err == nil && p.Bits() > 0 && p.Contains(a) {
				return true
			}
		}
	}
	return false
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bridgemail/bridge/config"
)

const unitPath = "../../contrib/systemd/bridge.service"

func TestSystemdUnitDirectives(t *testing.T) {
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		lines[strings.TrimSpace(line)] = true
	}
	for _, want := range []string{
		"Type=notify",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"WatchdogSec=30s",
		"User=bridge",
		"StateDirectory=bridge",
		"ConfigurationDirectory=bridge",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"NoNewPrivileges=yes",
		"CapabilityBoundingSet=",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
		"SystemCallFilter=@system-service",
		"LockPersonality=yes",
		"MemoryDenyWriteExecute=yes",
	} {
		if !lines[want] {
			t.Errorf("%s lacks %q", unitPath, want)
		}
	}
}

// TestSystemdUnitVerifies runs systemd-analyze on the unit, with ExecStart
// pointing at the test binary, when systemd-analyze is installed.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "bridge.service")
	text := strings.ReplaceAll(string(data), "/usr/local/bin/bridge", bridgeBinary)
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	// verify exits 0 even for unknown keys, so any output is a failure.
	out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	out, err = exec.Command(analyze, "security", "--offline=yes", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for bridge.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	// systemd rates 0 to 10; below 2 it calls the exposure "OK".
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level >= 2 {
		t.Errorf("exposure level %s, want below 2:\n%s", m[1], out)
	}
}

func TestSystemdConfigLoads(t *testing.T) {
	cfg, err := config.Load("../../contrib/systemd/config.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	for name, got := range map[string]string{
		"store.path":         cfg.Store.Path,
		"store.key_file":     cfg.Store.KeyFile,
		"store.admin_socket": cfg.Store.AdminSocket,
	} {
		if !strings.HasPrefix(got, "/var/lib/bridge/") {
			t.Errorf("%s = %s, want a path in the unit's StateDirectory", name, got)
		}
	}
	if cfg.Limits.ShutdownGrace.Seconds() >= 45 {
		t.Errorf("shutdown_grace %v does not fit in the unit's TimeoutStopSec=45s", cfg.Limits.ShutdownGrace)
	}
}

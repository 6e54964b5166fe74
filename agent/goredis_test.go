package agent_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/library/goredis"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// go-redis spans against a real redis-server on loopback: one client span
// per command and per pipeline, named by the command, under the user
// function that ran it; a miss (redis.Nil) is not an error, a rejected
// command is; keys and values are never recorded. The oldest and newest
// tabled go-redis releases, each with the toolchains of the matrix that
// can build it (the newest needs Go 1.26), with DWARF and stripped (the
// field table).
func TestGoRedis(t *testing.T) {
	fixture.RequireRoot(t)
	addr := startRedis(t)
	versions := goredis.Library.Versions
	oldest, newest := versions[0], versions[len(versions)-1]
	for _, tc := range fixture.Matrix() {
		for _, v := range []string{oldest, newest} {
			if v == newest && goMinor(tc) < 26 {
				continue // go-redis v9.23 requires go 1.26
			}
			for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
				t.Run(v+"/"+tc+"/"+string(mode), func(t *testing.T) {
					bin := fixture.BuildWith(t, "redisapp", tc, mode, map[string]string{goredis.Library.Module: v})
					if mode == fixture.Default {
						checkFieldTable(t, bin, v)
					}
					testGoRedis(t, bin, addr)
				})
			}
		}
	}
}

func testGoRedis(t *testing.T, bin, addr string) {
	tr := traceCommand(t, agent.Config{}, []string{"main.connect", "main.cachePut", "main.cacheGet", "main.bump", "main.batch", "main.transfer"},
		"true\nhit secret-value\nmiss\nerror\n3 commands\n2\n", bin, addr)
	_, port, _ := net.SplitHostPort(addr)
	wantPort, _ := strconv.Atoi(port)
	byID := tr.byID
	// Commands run by the traced functions, in order: exactly these.
	type call struct {
		parent, name string
		err          string // the error code, "" for none
		batch        any    // db.operation.batch.size
	}
	want := []call{
		{"main.connect", "PING", "", nil},
		{"main.cachePut", "SET", "", nil},
		{"main.cacheGet", "GET", "", nil}, // a hit
		{"main.cacheGet", "GET", "", nil}, // a miss: redis.Nil is no error
		{"main.bump", "INCR", "ERR", nil}, // INCR of a non-integer value
		{"main.batch", "PIPELINE", "", int64(3)},
		{"main.transfer", "MULTI", "", int64(2)}, // SET, INCR in MULTI ... EXEC
	}
	var got []call
	var clients []*span.Span
	for _, s := range tr.spans {
		if s.Kind == span.KindClient {
			clients = append(clients, s)
		}
	}
	sort.Slice(clients, func(i, j int) bool { return clients[i].Start.Before(clients[j].Start) })
	for _, c := range clients {
		for _, a := range c.Attrs {
			if strings.Contains(fmt.Sprint(a.Value), "secret") {
				t.Errorf("%s: key or value recorded: %s=%v", c.Name, a.Key, a.Value)
			}
		}
		if attr(c, "db.system.name") != "redis" || attr(c, "db.operation.name") != c.Name ||
			attr(c, "server.address") != "127.0.0.1" || attr(c, "server.port") != int64(wantPort) || attr(c, "db.namespace") != "3" {
			t.Errorf("%s: attributes %v", c.Name, c.Attrs)
		}
		code, _ := attr(c, "db.response.status_code").(string)
		if (c.Status == span.StatusError) != (code != "") || attr(c, "error.type") != attr(c, "db.response.status_code") {
			t.Errorf("%s: status %v %q, attributes %v", c.Name, c.Status, c.StatusMessage, c.Attrs)
		}
		parent := byID[c.ParentID]
		switch {
		case parent == nil || parent.TraceID != c.TraceID:
			t.Errorf("%s: parent %v", c.Name, parent)
		case parent.Kind == span.KindClient:
			// The command that opened a connection also ran its
			// handshake; CLIENT SETINFO / MAINT_NOTIFICATIONS (v9.23) are
			// unknown to servers before Redis 7.2 and may fail: go-redis
			// ignores that.
			if c.Name != "HELLO" && c.Name != "PIPELINE" && c.Name != "CLIENT" || c.Status == span.StatusError && c.Name != "CLIENT" {
				t.Errorf("handshake span %s under %s: status %v", c.Name, parent.Name, c.Status)
			}
		default:
			got = append(got, call{parent.Name, c.Name, code, attr(c, "db.operation.batch.size")})
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("commands\n got %v\nwant %v", got, want)
	}
	// The first command opened the connection: its handshake is under it.
	hello := false
	for _, c := range clients {
		if p := byID[c.ParentID]; c.Name == "HELLO" && p != nil && p.Name == "PING" {
			hello = true
		}
	}
	if !hello {
		t.Errorf("no HELLO under the first command")
	}
}

// checkFieldTable compares the offsets fields.json gives for go-redis
// version v with the DWARF of bin, built with it.
func checkFieldTable(t *testing.T, bin, v string) {
	b, err := symbolizer.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lib := goredis.Library
	dwarf, err := b.DWARFFieldOffsets(lib.Fields)
	if err != nil {
		t.Fatalf("DWARF offsets: %v", err)
	}
	b.HasDWARF = false
	table, src, err := b.FieldOffsets(lib.Module, lib.Fields)
	if err != nil || src != "table:"+lib.Module+"@"+v {
		t.Fatalf("table offsets: %v (%s)", err, src)
	}
	if fmt.Sprint(dwarf) != fmt.Sprint(table) {
		t.Errorf("DWARF %v, table %v", dwarf, table)
	}
}

// startRedis runs a redis-server on a free loopback port, without
// persistence, for the life of the test; it returns its address.
func startRedis(t *testing.T) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "SKIP: redis-server is not installed (apt-get install -y redis-server)"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: " + msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	log, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("redis-server on %s did not start: %v\n%s", addr, err, b)
		}
	}
}

// goMinor is the minor release of toolchain tc ("go1.21.13", "local").
func goMinor(tc string) int {
	if tc == "local" {
		tc = runtime.Version()
	}
	parts := strings.Split(strings.TrimPrefix(tc, "go"), ".")
	if len(parts) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(parts[1])
	return n
}

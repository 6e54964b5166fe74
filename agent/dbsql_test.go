package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/bpf/library"
	"github.com/latscope/latscope/bpf/library/dbsql"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
	"github.com/latscope/latscope/symbolizer"
)

// database/sql spans against real SQLite: statements with literals
// redacted, operation names, the driver's system, the database (here
// ":memory:"), errors, and parents; through *sql.DB, *sql.Tx and prepared
// *sql.Stmt.
func TestDatabaseSQL(t *testing.T) {
	fixture.RequireRoot(t)
	for _, tc := range []string{"go1.21.13", "local"} {
		for _, mode := range []fixture.Mode{fixture.Default, fixture.Stripped} {
			t.Run(tc+"/"+string(mode), func(t *testing.T) {
				bin := fixture.Build(t, "sqlapp", tc, mode)
				tr := traceCommand(t, agent.Config{}, []string{"main.setup", "main.loadItem", "main.broken", "main.prepared"}, "secret-name other true renamed\n", bin)
				byID := tr.byID
				type want struct{ parent, name, text string }
				var got []want
				for _, s := range tr.spans {
					if s.Kind != span.KindClient {
						continue
					}
					if attr(s, "db.system.name") != "sqlite" || attr(s, "db.operation.name") != s.Name ||
						attr(s, "db.namespace") != ":memory:" || attr(s, "server.address") != nil {
						t.Errorf("span %s: %v", s.Name, s.Attrs)
					}
					text := attr(s, "db.query.text").(string)
					if strings.Contains(text, "secret") || strings.Contains(text, "'") {
						t.Errorf("literal not redacted: %q", text)
					}
					if wantErr := strings.Contains(text, "missing_table"); (s.Status == span.StatusError) != wantErr {
						t.Errorf("%q: status %v", text, s.Status)
					}
					p := byID[s.ParentID]
					if p == nil || p.TraceID != s.TraceID {
						t.Fatalf("%q: parent %v", text, p)
					}
					got = append(got, want{p.Name, s.Name, text})
				}
				wantSpans := []want{
					{"main.setup", "CREATE", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"},
					{"main.setup", "INSERT", "INSERT INTO items VALUES (?, ?), (?, ?)"},
					{"main.loadItem", "SELECT", "SELECT name FROM items WHERE id = ?"},
					{"main.loadItem", "SELECT", "SELECT name FROM items WHERE id = ?"},
					{"main.broken", "SELECT", "SELECT * FROM missing_table"},
					{"main.prepared", "UPDATE", "UPDATE items SET name = ? WHERE id = ?"},
					{"main.prepared", "SELECT", "SELECT name FROM items WHERE id = ?"},
				}
				if len(got) != len(wantSpans) {
					t.Fatalf("got %d database spans %v, want %v", len(got), got, wantSpans)
				}
				for _, w := range wantSpans {
					found := false
					for i, g := range got {
						if g == w {
							got = append(got[:i], got[i+1:]...)
							found = true
							break
						}
					}
					if !found {
						t.Errorf("missing span %+v", w)
					}
				}
			})
		}
	}
}

// The drivers whose connections database/sql spans name the server of,
// pinned by TestDatabaseServers: the oldest tabled releases (the
// fixture's go.mod) and the newest.
var newestDrivers = map[string]string{
	"github.com/go-sql-driver/mysql": "v1.10.1",
	"github.com/jackc/pgx/v5":        "v5.13.0",
	"github.com/lib/pq":              "v1.12.3",
	"modernc.org/sqlite":             "v1.62.0",
}

// database/sql spans name the server and database of their connection,
// against real servers: MariaDB over TCP and over its Unix socket
// (go-sql-driver/mysql), PostgreSQL over TCP (pgx/v5 stdlib) and over
// its Unix socket (lib/pq), and a SQLite file (modernc.org/sqlite), all
// five used by one process, through *sql.DB, *sql.Tx, a DB's and a Tx's
// prepared statement. The oldest tabled driver releases with every
// toolchain of the matrix, the newest with those that build them (Go ≥
// 1.26); with DWARF and stripped (the field table), and with the local Go
// also a stripped PIE.
func TestDatabaseServers(t *testing.T) {
	fixture.RequireRoot(t)
	maria := startMariaDB(t)
	pg := startPostgres(t)
	for _, tc := range fixture.Matrix() {
		for _, set := range []string{"oldest", "newest"} {
			var pin map[string]string
			if set == "newest" {
				if goMinor(tc) < 26 {
					continue // pgx v5.13 needs Go 1.25, modernc.org/sqlite v1.62 Go 1.26
				}
				pin = newestDrivers
			}
			modes := []fixture.Mode{fixture.Default, fixture.Stripped}
			if tc == "local" {
				modes = append(modes, fixture.StrippedPIE) // addresses at a load bias
			}
			for _, mode := range modes {
				t.Run(set+"/"+tc+"/"+string(mode), func(t *testing.T) {
					bin := fixture.BuildWith(t, "sqldrivers", tc, mode, pin)
					if mode == fixture.Default {
						checkDepFieldTables(t, bin, dbsql.Library)
					}
					testDatabaseServers(t, bin, maria, pg)
				})
			}
		}
	}
}

func testDatabaseServers(t *testing.T, bin string, maria mariaDB, pg postgres) {
	args, want := serverArgs(t, maria, pg)
	tr := traceCommand(t, agent.Config{}, dbFuncs, dbOutput, append([]string{bin}, args...)...)
	checkServerSpans(t, tr.spans, tr.byID, tr.res, want)
}

// The traced functions of the sqldrivers fixture and what it prints.
var (
	dbFuncs  = []string{"main.useSQLite", "main.useMySQL", "main.useMySQLSocket", "main.usePgx", "main.usePq"}
	dbOutput = "sqlite name renamed\nmysql name renamed\nmysql-socket name renamed\npgx name renamed\npq name renamed\n"
)

// The server of a database span.
type dbServer struct {
	system, address string
	port            any // int64, or nil: none
	namespace       string
}

// serverArgs returns the sqldrivers fixture's arguments for the servers
// and, by traced function, the server its spans must name.
func serverArgs(t *testing.T, maria mariaDB, pg postgres) ([]string, map[string]dbServer) {
	file := filepath.Join(t.TempDir(), "shop.db")
	mysqlPort, _ := strconv.Atoi(maria.port)
	pgPort, _ := strconv.Atoi(pg.port)
	args := []string{
		"file:" + file + "?_pragma=busy_timeout(5000)",
		"root@tcp(127.0.0.1:" + maria.port + ")/shop",
		"root@unix(" + maria.socket + ")/stock",
		"postgres://postgres@127.0.0.1:" + pg.port + "/shop?sslmode=disable",
		"host=" + pg.socketDir + " port=" + pg.port + " user=postgres dbname=stock sslmode=disable",
	}
	return args, map[string]dbServer{
		"main.useSQLite":      {"sqlite", "", nil, file},
		"main.useMySQL":       {"mysql", "127.0.0.1", int64(mysqlPort), "shop"},
		"main.useMySQLSocket": {"mysql", maria.socket, nil, "stock"},
		"main.usePgx":         {"postgresql", "127.0.0.1", int64(pgPort), "shop"},
		"main.usePq":          {"postgresql", pg.socketDir + "/.s.PGSQL." + pg.port, nil, "stock"},
	}
}

// checkServerSpans checks every client span names the server of the
// traced function above it, that each function made its six calls
// (DROP, CREATE, INSERT in a Tx, UPDATE by the Tx's statement, SELECT on
// the DB, SELECT by the DB's statement), no literal is recorded and every
// connection's driver was recognized.
func checkServerSpans(t *testing.T, spans []*span.Span, byID map[span.SpanID]*span.Span, res *agent.Result, want map[string]dbServer) {
	t.Helper()
	const calls = 6
	count := map[string]int{}
	for _, s := range spans {
		if s.Kind != span.KindClient {
			continue
		}
		p := byID[s.ParentID]
		if p == nil {
			t.Errorf("%s %v: no parent", s.Name, attr(s, "db.query.text"))
			continue
		}
		w, ok := want[p.Name]
		if !ok {
			t.Errorf("%s %v: under %s", s.Name, attr(s, "db.query.text"), p.Name)
			continue
		}
		count[p.Name]++
		address, _ := attr(s, "server.address").(string)
		namespace, _ := attr(s, "db.namespace").(string)
		got := dbServer{fmt.Sprint(attr(s, "db.system.name")), address, attr(s, "server.port"), namespace}
		if got != w {
			t.Errorf("%s %v under %s: %+v, want %+v", s.Name, attr(s, "db.query.text"), p.Name, got, w)
		}
		for _, a := range s.Attrs {
			if strings.Contains(fmt.Sprint(a.Value), "secret") {
				t.Errorf("%s: literal recorded: %s=%v", s.Name, a.Key, a.Value)
			}
		}
	}
	for name := range want {
		if count[name] != calls {
			t.Errorf("%s: %d database spans, want %d", name, count[name], calls)
		}
	}
	if n := res.Counter("db_server_unknown"); n != 0 {
		t.Errorf("db_server_unknown = %d, want 0", n)
	}
}

// Connections opened before latscope attached name their server too:
// the probes read the connection at each call, not when it is opened.
// The fixture opens one connection per database and uses it, then, once
// attached, uses it again.
func TestDatabaseServersOpenedBeforeAttach(t *testing.T) {
	fixture.RequireRoot(t)
	maria := startMariaDB(t)
	pg := startPostgres(t)
	bin := fixture.Build(t, "sqldrivers", "local", fixture.Stripped)
	args, want := serverArgs(t, maria, pg)
	cmd := exec.Command(bin, append([]string{"-again"}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "connected\n" {
		t.Fatalf("fixture said %q (%v), want connected; stderr: %s", line, err, stderr.String())
	}
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(out)
		rest <- string(b)
	}()
	col := &collector{}
	s := &agent.Session{PIDs: []int{cmd.Process.Pid}, Patterns: dbFuncs, Exporters: []span.Exporter{col},
		Ready: func(*agent.Process) { io.WriteString(stdin, "go\n") }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := s.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fixture: %v; stderr: %s", err, stderr.String())
	}
	if got := <-rest; got != dbOutput {
		t.Fatalf("output %q, want %q", got, dbOutput)
	}
	byID := map[span.SpanID]*span.Span{}
	for _, sp := range col.spans {
		byID[sp.SpanID] = sp
	}
	checkServerSpans(t, col.spans, byID, res, want)
}

// checkDepFieldTables compares, for every dep of lib that bin links, the
// offsets fields.json gives for the version bin was built with with
// bin's DWARF: the exact version must be tabled.
func checkDepFieldTables(t *testing.T, bin string, lib *library.Library) {
	t.Helper()
	b, err := symbolizer.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, d := range lib.Deps {
		v, ok := b.ModuleVersion(d.Module)
		if !ok {
			t.Errorf("%s does not link %s", bin, d.Module)
			continue
		}
		var names []string
		for _, f := range lib.Fields {
			if lib.ModuleOf(f) == d.Module {
				names = append(names, f)
			}
		}
		dwarf, err := b.DWARFFieldOffsets(names)
		if err != nil {
			t.Fatalf("%s %s: DWARF offsets: %v", d.Module, v, err)
		}
		b.HasDWARF = false
		table, src, err := b.FieldOffsets(d.Module, names)
		b.HasDWARF = true
		if err != nil || src != "table:"+d.Module+"@"+v {
			t.Errorf("%s %s: table offsets: %v (%s)", d.Module, v, err, src)
			continue
		}
		if fmt.Sprint(dwarf) != fmt.Sprint(table) {
			t.Errorf("%s %s: DWARF %v, table %v", d.Module, v, dwarf, table)
		}
	}
}

type mariaDB struct{ port, socket string }

// startMariaDB runs a MariaDB server for the life of the test, in a
// temporary data directory, on a free loopback port and a Unix socket,
// with empty databases shop and stock; root connects without a password.
func startMariaDB(t *testing.T) mariaDB {
	t.Helper()
	server := dbServerTool(t, "mariadbd", "mariadb-server", nil)
	install := dbServerTool(t, "mariadb-install-db", "mariadb-server", nil)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--user=root",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	init := filepath.Join(dir, "init.sql")
	if err := os.WriteFile(init, []byte("CREATE DATABASE shop;\nCREATE DATABASE stock;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db := mariaDB{port: strconv.Itoa(freePort(t)), socket: filepath.Join(dir, "mysqld.sock")}
	cmd := exec.Command(server, "--no-defaults", "--datadir="+data, "--user=root", "--port="+db.port,
		"--bind-address=127.0.0.1", "--socket="+db.socket, "--pid-file="+filepath.Join(dir, "mysqld.pid"),
		"--init-file="+init, "--skip-log-bin", "--innodb-buffer-pool-size=16M")
	startServer(t, cmd, filepath.Join(dir, "mariadbd.log"), "127.0.0.1:"+db.port, syscall.SIGTERM)
	return db
}

type postgres struct{ port, socketDir string }

// startPostgres runs a PostgreSQL server for the life of the test, as
// nobody (it refuses to run as root), in a temporary data directory, on
// a free loopback port and a Unix socket in socketDir, with empty
// databases shop and stock; user postgres connects without a password.
func startPostgres(t *testing.T) postgres {
	t.Helper()
	// Debian keeps them off PATH, under /usr/lib/postgresql/VERSION/bin.
	extra, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Sort(sort.Reverse(sort.StringSlice(extra)))
	server := dbServerTool(t, "postgres", "postgresql", extra)
	bin := filepath.Dir(server)
	initdb := dbServerTool(t, "initdb", "postgresql", []string{bin})
	createdb := dbServerTool(t, "createdb", "postgresql", []string{bin})
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("PostgreSQL runs as nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	// Not t.TempDir: its parent is private to root.
	dir, err := os.MkdirTemp("", "latscope-postgres")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, data} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	cmd.SysProcAttr, cmd.Dir = asNobody, dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	db := postgres{port: strconv.Itoa(freePort(t)), socketDir: dir}
	cmd = exec.Command(server, "-D", data, "-h", "127.0.0.1", "-p", db.port, "-k", dir, "-c", "fsync=off", "-c", "shared_buffers=16MB")
	cmd.SysProcAttr, cmd.Dir = asNobody, dir
	// SIGINT: fast shutdown, its sessions ended.
	startServer(t, cmd, filepath.Join(t.TempDir(), "postgres.log"), "127.0.0.1:"+db.port, syscall.SIGINT)
	for _, name := range []string{"shop", "stock"} {
		if out, err := exec.Command(createdb, "-h", "127.0.0.1", "-p", db.port, "-U", "postgres", name).CombinedOutput(); err != nil {
			t.Fatalf("createdb %s: %v\n%s", name, err, out)
		}
	}
	return db
}

// dbServerTool finds a database server's program on PATH or in dirs;
// without it the test skips (fails under CI=true) naming the package.
func dbServerTool(t *testing.T, name, pkg string, dirs []string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range append(dirs, "/usr/sbin", "/usr/bin") {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("SKIP: %s is not installed (apt-get install -y %s)", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true: " + msg)
	}
	t.Skip(msg)
	return ""
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServer starts cmd, its output to logPath, waits until addr
// accepts connections and stops it with stop (then waits for it) when
// the test ends.
func startServer(t *testing.T, cmd *exec.Cmd, logPath, addr string, stop syscall.Signal) {
	t.Helper()
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(stop)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%s on %s did not start: %v\n%s", filepath.Base(cmd.Path), addr, err, b)
		}
	}
}

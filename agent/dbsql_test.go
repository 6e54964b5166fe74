package agent_test

import (
	"strings"
	"testing"

	"github.com/latscope/latscope/agent"
	"github.com/latscope/latscope/internal/fixture"
	"github.com/latscope/latscope/span"
)

// database/sql spans against real SQLite: statements with literals
// redacted, operation names, the driver's system, errors, and parents;
// through *sql.DB, *sql.Tx and prepared *sql.Stmt.
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
					if attr(s, "db.system.name") != "sqlite" || attr(s, "db.operation.name") != s.Name {
						t.Errorf("span %s: system %v operation %v", s.Name, attr(s, "db.system.name"), attr(s, "db.operation.name"))
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

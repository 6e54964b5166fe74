package dbsql

import "testing"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT name FROM products WHERE id = ?", "SELECT name FROM products WHERE id = ?"},
		{"SELECT * FROM t WHERE name = 'O''Brien' AND n > 42", "SELECT * FROM t WHERE name = ? AND n > ?"},
		{"INSERT INTO t2 (a, b) VALUES (3.14, 'x')", "INSERT INTO t2 (a, b) VALUES (?, ?)"},
		{`SELECT "col1" FROM "t 1" WHERE x = $1`, `SELECT "col1" FROM "t 1" WHERE x = $1`},
		{"UPDATE t SET v = -7 WHERE k = :key", "UPDATE t SET v = -? WHERE k = :key"},
		{"SELECT 'unterminated", "SELECT ?"},
		{"SELECT `a` FROM b1", "SELECT `a` FROM b1"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("SELECT 'a' FROM \"b\" WHERE c = 1")
	f.Fuzz(func(t *testing.T, q string) {
		r := Redact(q)
		if len(r) > len(q)+1 {
			t.Errorf("redacted %q grew to %q", q, r)
		}
	})
}

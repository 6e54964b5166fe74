package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// errNoProduct means the products table has no row with the id asked for.
var errNoProduct = errors.New("no such product")

// store is the products table in SQLite.
type store struct {
	db *sql.DB
}

// openStore opens the SQLite file at path and (re)seeds products 1..n.
func openStore(ctx context.Context, path string, n int64) (*store, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	s := &store{db: db}
	if err := s.seed(ctx, n); err != nil {
		db.Close()
		return nil, fmt.Errorf("seed sqlite %s: %w", path, err)
	}
	return s, nil
}

func (s *store) seed(ctx context.Context, n int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS products (
		id          INTEGER PRIMARY KEY,
		name        TEXT NOT NULL,
		description TEXT NOT NULL
	)`); err != nil {
		return err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO products (id, name, description) VALUES (?, ?, ?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	adjectives := []string{"Sturdy", "Tiny", "Golden", "Quiet", "Rapid", "Vintage", "Bright"}
	nouns := []string{"Lamp", "Kettle", "Notebook", "Chair", "Backpack", "Teapot", "Clock", "Pen"}
	for id := int64(1); id <= n; id++ {
		name := fmt.Sprintf("%s %s", adjectives[id%int64(len(adjectives))], nouns[id%int64(len(nouns))])
		desc := fmt.Sprintf("A %s, item %d of the demo catalog.", name, id)
		if _, err := ins.ExecContext(ctx, id, name, desc); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// product returns the name and description of product id, or errNoProduct.
func (s *store) product(ctx context.Context, id int64) (name, description string, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT name, description FROM products WHERE id = ?`, id).Scan(&name, &description)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", errNoProduct
	}
	if err != nil {
		return "", "", fmt.Errorf("select product %d: %w", id, err)
	}
	return name, description, nil
}

// Close closes the database.
func (s *store) Close() error { return s.db.Close() }

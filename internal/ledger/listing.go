package ledger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"
)

// listCutAttempts bounds the listings of one directory that concurrent
// writes cut short, before giving up with an error.
const listCutAttempts = 5

// listTree lists the keys prefix/<dir>/<file> of a two-level tree (the
// ledger's orders and certificates, certmagic's certificates) while other
// issuances write and delete in it.
//
// certmagic's FileStorage walks the tree and fails the whole listing with
// fs.ErrNotExist when any entry goes away meanwhile (a record deleted, the
// temporary file of an atomic write renamed): that is not "nothing
// there". Taken as empty, it made a reconciliation overlook the record of
// a request whose answer was lost, and its order stayed pending at SSLCI.
// So a listing cut short is done again directory by directory, each
// retried while cut short: only a directory that does not exist is empty,
// and a key that exists throughout the listing is always in it.
func listTree(ctx context.Context, storage certmagic.Storage, prefix string) ([]string, error) {
	keys, err := storage.List(ctx, prefix, true)
	if errors.Is(err, fs.ErrNotExist) {
		keys, err = listByDir(ctx, storage, prefix)
	}
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(keys, func(key string) bool {
		rel, ok := strings.CutPrefix(key, prefix+"/")
		return !ok || strings.Count(rel, "/") != 1
	}), nil
}

// listByDir lists the directories under prefix, then each of them.
func listByDir(ctx context.Context, storage certmagic.Storage, prefix string) ([]string, error) {
	dirs, err := ListDir(ctx, storage, prefix)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, dir := range dirs {
		files, err := ListDir(ctx, storage, dir)
		if err != nil {
			return nil, err
		}
		keys = append(keys, files...)
	}
	return keys, nil
}

// ListDir lists one directory's entries, again while concurrent writes cut
// the listing short: Caddy's file storage says "not exist" for a listing
// cut short too, and only a directory that is not there is empty.
func ListDir(ctx context.Context, storage certmagic.Storage, dir string) ([]string, error) {
	for attempt := 1; ; attempt++ {
		keys, err := storage.List(ctx, dir, false)
		if !errors.Is(err, fs.ErrNotExist) {
			return keys, err
		}
		// Only a directory that is not there is empty: a Stat that fails
		// otherwise says nothing (Exists would say false).
		_, statErr := storage.Stat(ctx, dir)
		switch {
		case errors.Is(statErr, fs.ErrNotExist):
			return nil, nil
		case statErr != nil:
			return nil, fmt.Errorf("listing %s: %w", dir, statErr)
		case attempt == listCutAttempts:
			return nil, fmt.Errorf("listing %s: entries kept going away during the listing (%d attempts): %v", dir, attempt, err)
		}
	}
}

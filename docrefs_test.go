package latchkey_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every file a Go comment points at is in the repository, and every
// section of docs/architecture.md it cites ("§7") exists.
func TestDocReferences(t *testing.T) {
	t.Parallel()
	arch, err := os.ReadFile("docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	ref := regexp.MustCompile(`\b((?:docs|cmd|internal)/[\w./-]+\.(?:md|go|json|toml|yaml))(?:\s+§(\d+))?`)
	filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			if d != nil && d.IsDir() && path != "." {
				return filepath.SkipDir
			}
			return err
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, _ := os.ReadFile(path)
		src := string(b)
		if strings.Contains(src, "DESIGN"+".md") {
			t.Errorf("%s points at DESIGN"+".md, which is not in the repository (docs/architecture.md holds the design)", path)
		}
		var comments strings.Builder
		for _, line := range strings.Split(src, "\n") {
			if _, c, ok := strings.Cut(line, "// "); ok {
				comments.WriteString(c + "\n")
			}
		}
		for _, m := range ref.FindAllStringSubmatch(comments.String(), -1) {
			target := strings.TrimRight(m[1], ".")
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s points at %s, which does not exist", path, target)
			}
			if m[2] != "" && target == "docs/architecture.md" && !strings.Contains(string(arch), "## §"+m[2]+".") {
				t.Errorf("%s cites docs/architecture.md §%s, which has no such section", path, m[2])
			}
		}
		return nil
	})
}

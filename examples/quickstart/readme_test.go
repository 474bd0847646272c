package main

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEShowsThisCode: the README's SDK snippet is the code of this
// program between the "README:" marks, so the snippet compiles and runs
// (e2e's TestDemoTwice runs this program and sees its event arrive).
func TestREADMEShowsThisCode(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(src), "\t// README: begin\n")
	snippet, _, ok2 := strings.Cut(rest, "\t// README: end\n")
	if !ok || !ok2 {
		t.Fatal("main.go lacks the `// README: begin` / `// README: end` marks")
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(snippet, "\n") {
		b.WriteString(strings.TrimPrefix(line, "\t"))
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+b.String()+"```\n") {
		t.Errorf("README.md has no ```go block that is exactly the code between the README marks of examples/quickstart/main.go:\n%s", b.String())
	}
}

package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/internal/testutil"
)

// completionCase is a line typed into a shell, then TAB (twice in bash,
// whose first TAB only completes what all candidates share), and what the
// shell must then show.
type completionCase struct {
	typed string
	want  *regexp.Regexp
	all   []string // words the candidates must all include
}

var completionCases = []completionCase{
	{"vmaconv convert -O ", regexp.MustCompile(`ova\s+qcow2\s+raw\s+vdi\s+vhdx\s+vma\s+vmdk\s+vpc`), nil},
	{"vmaconv -t ", regexp.MustCompile(`unsafe\s+writeback`), nil},
	{"vmaconv extract --compress z", regexp.MustCompile(`zlib\s+zstd`), nil},
	{"vmaconv compare -f q", regexp.MustCompile(`(^|-f |\n)qcow2\s`), nil},
	// The devices inside an archive, read from its header (compressed
	// too), by name and by Proxmox key; a device completed in place.
	{"vmaconv m.vma:", regexp.MustCompile(`virtio1\s[\s\S]*P> |virtio1\n$`), []string{"drive-scsi0", "drive-virtio1", "scsi0", "virtio1"}},
	{"vmaconv map m.vma.zst:drive-v", regexp.MustCompile(`m\.vma\.zst:drive-virtio1\s`), nil},
}

// TestCompletionShells: each shell, with the code vmaconv completion
// prints for it sourced, completes flag values (-O, -t, --compress, -f)
// and the devices of an archive after ARCHIVE: (bash, whose words stop at
// colons, included). A shell that is missing is a skip that says so, and
// a failure under CI=true.
func TestCompletionShells(t *testing.T) {
	dir := t.TempDir()
	raw := testutil.WriteArchive(t, []testutil.Disk{
		{Name: "drive-scsi0", Data: testutil.GenDisk(1, 65536, "data")},
		{Name: "drive-virtio1", Data: testutil.GenDisk(2, 65536, "data")},
	}, []format.Config{{Name: "qemu-server.conf", Data: []byte("memory: 512\n")}}, "seq", 0)
	if err := os.WriteFile(filepath.Join(dir, "m.vma"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, st := runVmaconv("-q", filepath.Join(dir, "m.vma"), filepath.Join(dir, "m.vma.zst")); st != 0 {
		t.Fatal(stderr)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			shell := testutil.RequireTool(t, sh)
			if sh != "fish" {
				testutil.RequireTool(t, "script")
			}
			// The code comes from the vmaconv in $PATH (testscript's copy
			// of this test binary), which it names by its absolute path.
			code, err := exec.Command("vmaconv", "completion", sh).Output()
			if err != nil {
				t.Fatal(err)
			}
			codeFile := filepath.Join(dir, "c."+sh)
			os.WriteFile(codeFile, code, 0o644)
			if out, err := exec.Command(shell, "-n", codeFile).CombinedOutput(); err != nil {
				t.Fatalf("%s -n: %v\n%s", sh, err, out)
			}
			for i, got := range completeIn(t, sh, shell, dir, codeFile, completionCases) {
				tc := completionCases[i]
				words := map[string]bool{}
				for _, w := range regexp.MustCompile(`[^\s:]+`).FindAllString(got, -1) {
					words[w] = true
				}
				missing := false
				for _, w := range tc.all {
					missing = missing || !words[w]
				}
				if !tc.want.MatchString(got) || missing || strings.Contains(got, "m.vma:m.vma") {
					t.Errorf("%s: %q<TAB>: want %s, the shell showed:\n%s", sh, tc.typed, tc.want, got)
				}
			}
		})
	}
}

var escapes = regexp.MustCompile(`\x1b(\[[0-9;?]*[a-zA-Z]|\][^\x07]*\x07|[=>])|[\r\a]`)

// lockedBuffer collects a shell's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// text returns the output so far, terminal escapes removed.
func (l *lockedBuffer) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return escapes.ReplaceAllString(l.b.String(), "")
}

// waitFor waits until the output from byte from on matches re, up to d.
func (l *lockedBuffer) waitFor(from int, re *regexp.Regexp, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if re.MatchString(l.text()[from:]) {
			return true
		}
	}
	return false
}

var ready = regexp.MustCompile(`\nREADY\n[\s\S]*P> `)

// completeIn types each case's line and TAB into one interactive shell on
// a terminal (script gives bash and zsh one; each line is typed once the
// prompt shows, as a shell discards what is typed before, and killed
// with ^U once the shell has shown what the case wants, or after 5
// seconds); fish completes each line with complete -C. It returns what
// the shell printed for each case, terminal escapes removed.
func completeIn(t *testing.T, sh, shell, dir, code string, cases []completionCase) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	if sh == "fish" {
		for _, tc := range cases {
			cmd := exec.CommandContext(ctx, shell, "--no-config", "-c", `source `+code+`; complete -C "`+tc.typed+`" | string join "  "; true`)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), raceNoExitSleep())
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("fish: %v\n%s", err, out)
			}
			got = append(got, string(out))
		}
		return got
	}
	args, setup, tabs := []string{"-qec", shell + " --norc --noprofile -i", "/dev/null"}, "source "+code, "\t\t"
	if sh == "zsh" {
		args, setup, tabs = []string{"-qec", shell + " -f -i", "/dev/null"}, "autoload -U compinit && compinit -u && source "+code, "\t"
	}
	cmd := exec.CommandContext(ctx, "script", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TERM=dumb", "HISTFILE=/dev/null", raceNoExitSleep())
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	io.WriteString(stdin, "PS1='P> '; "+setup+"; echo RE''ADY\n")
	if !out.waitFor(0, ready, 10*time.Second) {
		t.Fatalf("%s did not start:\n%s", sh, out.text())
	}
	for _, tc := range cases {
		from := len(out.text())
		io.WriteString(stdin, tc.typed+tabs)
		out.waitFor(from, tc.want, 5*time.Second)
		got = append(got, out.text()[from:])
		io.WriteString(stdin, "\x15") // zle and readline read it in turn: no wait
	}
	io.WriteString(stdin, "exit\n")
	return got
}

// raceNoExitSleep is the environment setting (made by TestMain) that
// spares every run of a -race build of vmaconv (this test binary) the race
// detector's second of sleep at exit: a completion runs vmaconv for every
// TAB.
func raceNoExitSleep() string {
	return "GORACE=" + os.Getenv("GORACE")
}

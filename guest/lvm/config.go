package lvm

import (
	"fmt"
	"strconv"
)

// Limits of the metadata text parser. LVM's own metadata areas are
// usually 1 MiB, so real metadata is far below each of them.
const (
	// MaxMetadataText is the largest metadata text read or parsed.
	MaxMetadataText = 16 << 20
	// maxDepth bounds the nesting of sections and arrays.
	maxDepth = 32
	// maxItems bounds the number of sections, values and array elements.
	maxItems = 1 << 18
	// maxStringLen bounds one string or bare word.
	maxStringLen = 1 << 20
)

// valueKind tells what a config value holds.
type valueKind int

const (
	kindString valueKind = iota
	kindInt
	kindFloat
	kindArray
)

// value is one config value: a string, a number or an array of values.
type value struct {
	kind  valueKind
	str   string // kindString, and the text of a kindFloat
	num   int64  // kindInt
	array []value
}

// section is a config section: its name and its ordered items.
type section struct {
	name     string
	keys     []string // values, in order
	vals     []value
	children []*section // subsections, in order
}

// get returns the value of key, the last one if it repeats.
func (s *section) get(key string) (value, bool) {
	for i := len(s.keys) - 1; i >= 0; i-- {
		if s.keys[i] == key {
			return s.vals[i], true
		}
	}
	return value{}, false
}

// str returns key's string value.
func (s *section) str(key string) (string, bool) {
	v, ok := s.get(key)
	if !ok || v.kind != kindString {
		return "", false
	}
	return v.str, true
}

// int returns key's integer value.
func (s *section) int(key string) (int64, bool) {
	v, ok := s.get(key)
	if !ok || v.kind != kindInt {
		return 0, false
	}
	return v.num, true
}

// sub returns the subsection named name.
func (s *section) sub(name string) *section {
	for _, c := range s.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

// configParser parses LVM's config syntax (the metadata text format):
// sections "name { ... }", values "key = value", strings in double
// quotes with backslash escapes, integers, floats, arrays "[ v, v ]" and
// "#" comments to the end of the line. The text ends at its end or at its
// first NUL byte (LVM writes one after the metadata).
type configParser struct {
	text     []byte
	pos      int
	items    int
	maxItems int
}

// parseConfig parses text into a root section (named "").
func parseConfig(text []byte) (*section, error) {
	return parseConfigLimit(text, maxItems)
}

// parseConfigLimit parses text with a cap of limit items.
func parseConfigLimit(text []byte, limit int) (*section, error) {
	if len(text) > MaxMetadataText {
		return nil, fmt.Errorf("metadata text of %d bytes > %d: %w", len(text), MaxMetadataText, errCorrupt)
	}
	for i, c := range text {
		if c == 0 {
			text = text[:i]
			break
		}
	}
	p := &configParser{text: text, maxItems: limit}
	root := &section{}
	if err := p.items1(root, 0); err != nil {
		return nil, err
	}
	return root, nil
}

func (p *configParser) errorf(format string, args ...any) error {
	line := 1
	for _, c := range p.text[:p.pos] {
		if c == '\n' {
			line++
		}
	}
	return fmt.Errorf("metadata text line %d: %s: %w", line, fmt.Sprintf(format, args...), errCorrupt)
}

// skip skips white space and comments.
func (p *configParser) skip() {
	for p.pos < len(p.text) {
		switch c := p.text[p.pos]; c {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			p.pos++
		case '#':
			for p.pos < len(p.text) && p.text[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isWordByte(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f', '#', '=', '{', '}', '[', ']', ',', '"', '\'':
		return false
	}
	return true
}

// word reads a bare word (a key, a section name or an unquoted value).
func (p *configParser) word() (string, error) {
	start := p.pos
	for p.pos < len(p.text) && isWordByte(p.text[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		if p.pos >= len(p.text) {
			return "", p.errorf("unexpected end")
		}
		return "", p.errorf("unexpected %q", p.text[p.pos])
	}
	if p.pos-start > maxStringLen {
		return "", p.errorf("word of %d bytes > %d", p.pos-start, maxStringLen)
	}
	return string(p.text[start:p.pos]), nil
}

func (p *configParser) count() error {
	p.items++
	if p.items > p.maxItems {
		return p.errorf("more than %d items", p.maxItems)
	}
	return nil
}

// items1 parses the items of s until its closing brace (or the end of the
// text for the root).
func (p *configParser) items1(s *section, depth int) error {
	for {
		p.skip()
		if p.pos >= len(p.text) {
			if depth > 0 {
				return p.errorf("section %q not closed", s.name)
			}
			return nil
		}
		if p.text[p.pos] == '}' {
			if depth == 0 {
				return p.errorf("unexpected '}'")
			}
			p.pos++
			return nil
		}
		key, err := p.word()
		if err != nil {
			return err
		}
		if err := p.count(); err != nil {
			return err
		}
		p.skip()
		if p.pos >= len(p.text) {
			return p.errorf("unexpected end after %q", key)
		}
		switch p.text[p.pos] {
		case '{':
			if depth+1 > maxDepth {
				return p.errorf("sections nested deeper than %d", maxDepth)
			}
			p.pos++
			c := &section{name: key}
			if err := p.items1(c, depth+1); err != nil {
				return err
			}
			s.children = append(s.children, c)
		case '=':
			p.pos++
			v, err := p.value(depth + 1)
			if err != nil {
				return err
			}
			s.keys = append(s.keys, key)
			s.vals = append(s.vals, v)
		default:
			return p.errorf("unexpected %q after %q", p.text[p.pos], key)
		}
	}
}

// value parses one value.
func (p *configParser) value(depth int) (value, error) {
	if depth > maxDepth {
		return value{}, p.errorf("values nested deeper than %d", maxDepth)
	}
	p.skip()
	if p.pos >= len(p.text) {
		return value{}, p.errorf("unexpected end, want a value")
	}
	switch c := p.text[p.pos]; c {
	case '"', '\'':
		s, err := p.quoted(c)
		return value{kind: kindString, str: s}, err
	case '[':
		p.pos++
		var a []value
		for {
			p.skip()
			if p.pos >= len(p.text) {
				return value{}, p.errorf("array not closed")
			}
			if p.text[p.pos] == ']' {
				p.pos++
				return value{kind: kindArray, array: a}, nil
			}
			if err := p.count(); err != nil {
				return value{}, err
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return value{}, err
			}
			a = append(a, v)
			p.skip()
			if p.pos < len(p.text) && p.text[p.pos] == ',' {
				p.pos++
			} else if p.pos < len(p.text) && p.text[p.pos] != ']' {
				return value{}, p.errorf("unexpected %q in array", p.text[p.pos])
			}
		}
	}
	w, err := p.word()
	if err != nil {
		return value{}, err
	}
	if n, err := strconv.ParseInt(w, 10, 64); err == nil {
		return value{kind: kindInt, num: n}, nil
	}
	if _, err := strconv.ParseFloat(w, 64); err == nil {
		return value{kind: kindFloat, str: w}, nil
	}
	// LVM reads an unquoted word as a string.
	return value{kind: kindString, str: w}, nil
}

// quoted reads a string in quotes q; a backslash escapes the next byte.
func (p *configParser) quoted(q byte) (string, error) {
	p.pos++
	var b []byte
	for {
		if p.pos >= len(p.text) {
			return "", p.errorf("string not closed")
		}
		c := p.text[p.pos]
		p.pos++
		switch {
		case c == q:
			return string(b), nil
		case c == '\\':
			if p.pos >= len(p.text) {
				return "", p.errorf("string not closed")
			}
			c = p.text[p.pos]
			p.pos++
		}
		if len(b) >= maxStringLen {
			return "", p.errorf("string longer than %d bytes", maxStringLen)
		}
		b = append(b, c)
	}
}

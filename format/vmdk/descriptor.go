package vmdk

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// descriptor is what a descriptor (a descriptor file, or the text embedded
// in a sparse extent) says.
type descriptor struct {
	createType        string
	cid, parentCID    uint32
	hasCID, hasParent bool   // CID and parentCID lines seen
	parentHint        string // parentFileNameHint, "" if none
	extents           []extentLine
}

// extentLine is one extent of a descriptor.
type extentLine struct {
	access  string // RW or RDONLY (NOACCESS is refused)
	sectors int64
	typ     string // FLAT, VMFS, SPARSE, VMFSSPARSE, ZERO
	file    string // "" for ZERO
	offset  int64  // FLAT: sectors into the file
	line    int    // 1-based, for messages
}

// createTypes are the descriptor files QEMU opens (vmdk_open_desc_file);
// seSparse is refused by its extents' type.
var createTypes = []string{"monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"}

// probeDescriptor reports whether head is a descriptor file as QEMU's
// vmdk_probe recognises one: comment lines and lines of spaces, then
// "version=1", 2 or 3 (with \n or \r\n).
func probeDescriptor(head []byte) bool {
	p := head
	for len(p) > 0 {
		switch p[0] {
		case '#':
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return false
			}
			p = p[i+1:]
			continue
		case ' ':
			p = bytes.TrimLeft(p, " ")
			if len(p) > 0 && p[0] == '\r' {
				p = p[1:]
			}
			if len(p) == 0 || p[0] != '\n' {
				return false
			}
			p = p[1:]
			continue
		}
		for _, v := range []string{"version=1\n", "version=2\n", "version=3\n", "version=1\r\n", "version=2\r\n", "version=3\r\n"} {
			if bytes.HasPrefix(p, []byte(v)) {
				return true
			}
		}
		return false
	}
	return false
}

// parseDescriptor reads a descriptor's text, up to its first NUL byte (QEMU
// reads it as a C string). Lines are "key = value" (the value quoted or
// not) and extent lines, ACCESS SECTORS TYPE ["FILE" [OFFSET]]; comments
// and other lines are ignored. An extent line that does not parse is an
// error, as in QEMU, and so is one of a type this package does not read.
func parseDescriptor(text []byte) (*descriptor, error) {
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	d := &descriptor{}
	for n, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		if f := strings.Fields(line); len(f) >= 3 && (f[0] == "RW" || f[0] == "RDONLY" || f[0] == "NOACCESS") {
			if _, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				l, err := parseExtent(line, n+1)
				if err != nil {
					return nil, err
				}
				if l.sectors > 0 { // QEMU skips empty extents
					d.extents = append(d.extents, l)
				}
				continue
			}
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' {
			if i := strings.IndexByte(value[1:], '"'); i >= 0 {
				value = value[1 : 1+i]
			}
		}
		var err error
		switch key {
		case "createType":
			if d.createType == "" {
				d.createType = value
			}
		case "CID":
			if !d.hasCID {
				d.cid, err = parseCID(key, value)
				d.hasCID = true
			}
		case "parentCID":
			if !d.hasParent {
				d.parentCID, err = parseCID(key, value)
				d.hasParent = true
			}
		case "parentFileNameHint":
			if d.parentHint == "" {
				d.parentHint = value
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: descriptor line %d: %v", ErrCorrupt, n+1, err)
		}
	}
	return d, nil
}

// parseCID reads a content ID, hexadecimal as QEMU's sscanf %x reads it.
func parseCID(key, v string) (uint32, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X")
	n, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a 32-bit hexadecimal number", key, v)
	}
	return uint32(n), nil
}

// parseExtent reads an extent line as QEMU's vmdk_parse_extents does:
// a FLAT extent has an offset, others none; the file name is quoted.
func parseExtent(line string, n int) (extentLine, error) {
	bad := func(why string) (extentLine, error) {
		return extentLine{}, fmt.Errorf("%w: descriptor line %d: invalid extent line %q: %s", ErrCorrupt, n, line, why)
	}
	f := strings.Fields(line)
	l := extentLine{access: f[0], typ: f[2], line: n}
	var err error
	if l.sectors, err = strconv.ParseInt(f[1], 10, 64); err != nil || l.sectors < 0 || l.sectors > maxCapacity {
		return bad("the size is not a number of sectors")
	}
	rest := line
	for range 3 { // past access, size and type
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			i = len(rest)
		}
		rest = rest[i:]
	}
	rest = strings.TrimSpace(rest)
	if rest != "" {
		if rest[0] != '"' {
			return bad("the file name is not quoted")
		}
		i := strings.IndexByte(rest[1:], '"')
		if i < 0 {
			return bad("the file name has no closing quote")
		}
		l.file, rest = rest[1:1+i], strings.TrimSpace(rest[2+i:])
		if l.file == "" || len(l.file) > 511 {
			return bad("the file name is empty or longer than 511 bytes")
		}
	}
	hasOffset := rest != ""
	if hasOffset {
		if l.offset, err = strconv.ParseInt(rest, 10, 64); err != nil || l.offset < 0 || l.offset > maxCapacity {
			return bad("the offset is not a number of sectors")
		}
	}
	switch {
	case l.access == "NOACCESS":
		return extentLine{}, fmt.Errorf("%w: descriptor line %d: extent %q is NOACCESS", ErrUnsupported, n, l.file)
	case l.typ == "ZERO":
		if l.file != "" || hasOffset {
			return bad("a ZERO extent has no file")
		}
	case l.file == "":
		return bad("no file name")
	case l.typ == "FLAT":
		if !hasOffset {
			return bad("a FLAT extent has an offset")
		}
	case l.typ == "VMFS", l.typ == "SPARSE", l.typ == "VMFSSPARSE":
		if hasOffset {
			return bad("only a FLAT extent has an offset")
		}
	case l.typ == "SESPARSE":
		return extentLine{}, fmt.Errorf("%w: descriptor line %d: seSparse extent %q (qemu-img convert reads it)", ErrUnsupported, n, l.file)
	default:
		return extentLine{}, fmt.Errorf("%w: descriptor line %d: extent type %s (%q)", ErrUnsupported, n, l.typ, l.file)
	}
	return l, nil
}

// checkCreateType refuses a descriptor file of a type QEMU does not open.
func (d *descriptor) checkCreateType() error {
	switch {
	case d.createType == "":
		return fmt.Errorf("%w: the descriptor has no createType", ErrCorrupt)
	case !slices.Contains(createTypes, d.createType):
		return fmt.Errorf("%w: createType %q in a descriptor file (QEMU opens %s)", ErrUnsupported, d.createType, strings.Join(createTypes, ", "))
	case !d.hasCID:
		return fmt.Errorf("%w: the descriptor has no CID", ErrCorrupt)
	}
	return nil
}

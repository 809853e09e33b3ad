package main

import (
	"github.com/alecthomas/kong"
	"github.com/vmaconv/vmaconv/format"
	"github.com/vmaconv/vmaconv/input"
)

// flagGiven reports whether the flag was on the command line (kong sets
// defaults as if given).
func flagGiven(kctx *kong.Context, name string) bool {
	for _, p := range kctx.Path {
		if p.Flag != nil && p.Flag.Name == name {
			return true
		}
	}
	return false
}

// origin describes in for an archive written from it (input.Origin):
// ownConfigs says its configs are kept, not replaced (-c); whole that
// every disk is, under its own name.
func origin(in *input.Input, ownConfigs, whole bool) *format.Origin {
	o := in.Origin()
	o.OwnConfigs, o.Whole = ownConfigs, whole && ownConfigs && in.Archive()
	return o
}

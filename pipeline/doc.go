// Package pipeline moves disk data between vmaconv's formats through the
// contracts of package format, knowing no format itself: Scan reads a
// source with parallel readers, skipping the zero ranges it reports; Copy
// writes a source to a sink's disk; Hash digests it.
//
// Library code here never prints; progress is reported through callbacks.
package pipeline

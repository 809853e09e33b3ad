// Package pipeline moves disk data between vmaconv's formats. Unpack reads a
// VMA archive sequentially and writes its devices to io.WriterAt targets,
// leaving zero blocks as holes; it is also the engine of `vmaconv verify`
// (no targets) and of per-device digests.
//
// Library code here never prints; progress is reported through callbacks.
package pipeline

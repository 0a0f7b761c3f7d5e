package verify

import (
	"syscall"
	"unsafe"
)

// adviseHugePages asks the kernel to back [p, p+size) with transparent huge
// pages (MADV_HUGEPAGE), which it honours when THP is "madvise" or
// "always", and to collapse the pages already touched (MADV_COLLAPSE,
// Linux 6.1+; the allocator may have zeroed the memory before we could
// advise it). Best effort: an error changes nothing but speed.
func adviseHugePages(p unsafe.Pointer, size int) {
	const huge = 2 << 20
	start := (uintptr(p) + huge - 1) &^ (huge - 1) // whole huge pages only
	end := (uintptr(p) + uintptr(size)) &^ (huge - 1)
	if end <= start {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, start-uintptr(p))), end-start)
	const madvCollapse = 25 // not in package syscall
	if syscall.Madvise(b, syscall.MADV_HUGEPAGE) == nil {
		_ = syscall.Madvise(b, madvCollapse)
	}
}

package secret

import (
	"encoding/binary"
	"math/bits"
)

// Alphabet is the base62 alphabet of docs/architecture.md §1, in digit order.
const Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// digitOf maps a byte to its base62 value, or 0xff.
var digitOf = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(Alphabet); i++ {
		t[Alphabet[i]] = byte(i)
	}
	return t
}()

// encodeUint32 writes v in base62, big-endian, left-padded with '0', into dst.
func encodeUint32(dst []byte, v uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = Alphabet[v%62]
		v /= 62
	}
}

// decodeUint32 decodes a fixed-width base62 field; ok is false on a bad
// character or a value above 2^32-1.
func decodeUint32(s string) (v uint32, ok bool) {
	var acc uint64
	for i := 0; i < len(s); i++ {
		d := digitOf[s[i]]
		if d == 0xff {
			return 0, false
		}
		acc = acc*62 + uint64(d)
	}
	if acc > 1<<32-1 {
		return 0, false
	}
	return uint32(acc), true
}

// encode256 writes the 32-byte big-endian number b as SecretLen base62 digits.
func encode256(dst *[SecretLen]byte, b *[32]byte) {
	// limbs[0] is the most significant.
	var limbs [4]uint64
	for i := range limbs {
		for j := 0; j < 8; j++ {
			limbs[i] = limbs[i]<<8 | uint64(b[i*8+j])
		}
	}
	for i := SecretLen - 1; i >= 0; i-- {
		var rem uint64
		for k := range limbs {
			limbs[k], rem = bits.Div64(rem, limbs[k], 62)
		}
		dst[i] = Alphabet[rem]
	}
}

// decode256 decodes SecretLen base62 digits into a 32-byte big-endian
// number. ok is false on a bad character or a value of 2^256 or more
// (62^43 slightly exceeds 2^256, so some 43-digit strings do not fit).
//
// Digits are taken ten at a time (62^10 fits a uint64), two per step, so
// the 256-bit multiply runs five times rather than 43 and the dependency
// chains stay short: Parse stays under 100 ns.
func decode256(s string, out *[32]byte) (ok bool) {
	if len(s) != SecretLen {
		return false
	}
	const p10 = 839299365868340224 // 62^10
	var bad byte
	// 43 = 3 + 4*10 digits.
	d0, d1, d2 := digitOf[s[0]], digitOf[s[1]], digitOf[s[2]]
	bad = d0 | d1 | d2
	var limbs [4]uint64 // limbs[3] is the least significant
	limbs[3] = (uint64(d0)*62+uint64(d1))*62 + uint64(d2)
	for i := 3; i < SecretLen; i += 10 {
		c, b := chunk10(s[i : i+10])
		bad |= b
		carry := c
		for k := 3; k >= 0; k-- {
			hi, lo := bits.Mul64(limbs[k], p10)
			var cy uint64
			limbs[k], cy = bits.Add64(lo, carry, 0)
			carry = hi + cy
		}
		if carry != 0 {
			return false
		}
	}
	if bad&0x80 != 0 {
		return false
	}
	for i, v := range limbs {
		binary.BigEndian.PutUint64(out[i*8:], v)
	}
	return true
}

// chunk10 decodes ten base62 digits; bad has bit 7 set if any was invalid.
func chunk10(s string) (v uint64, bad byte) {
	_ = s[9]
	a0, a1, a2, a3, a4 := digitOf[s[0]], digitOf[s[1]], digitOf[s[2]], digitOf[s[3]], digitOf[s[4]]
	a5, a6, a7, a8, a9 := digitOf[s[5]], digitOf[s[6]], digitOf[s[7]], digitOf[s[8]], digitOf[s[9]]
	bad = a0 | a1 | a2 | a3 | a4 | a5 | a6 | a7 | a8 | a9
	const p2 = 62 * 62
	p0 := uint64(a0)*62 + uint64(a1)
	p1 := uint64(a2)*62 + uint64(a3)
	q2 := uint64(a4)*62 + uint64(a5)
	p3 := uint64(a6)*62 + uint64(a7)
	p4 := uint64(a8)*62 + uint64(a9)
	hi := (p0*p2+p1)*p2 + q2 // first six digits
	lo := p3*p2 + p4         // last four digits
	return hi*(p2*p2) + lo, bad
}

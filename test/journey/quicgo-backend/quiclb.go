package main

// QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21): a Go copy of lib/quiclb/config.ts, cipher.ts and
// encoder.ts (plaintext, single-pass AES-128-ECB, four-pass Feistel), checked against the same vectors
// (quiclb_test.go).

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

const (
	maxConfigID       = 6
	unroutableConfig  = 7
	minServerIDLen    = 1
	minNonceLen       = 4
	maxPlaintextLen   = 19
	keyLen            = 16
	maxCIDLen         = 20
	modePlaintext     = "plaintext"
	modeSinglePass    = "single-pass"
	modeFourPass      = "four-pass"
	cipherBlockLength = 16
)

// Config is one QUIC-LB configuration (config.ts QuicLbConfig).
type Config struct {
	ConfigID       int
	ServerIDLen    int
	NonceLen       int
	Key            []byte // nil: plaintext
	LenSelfEncoded bool
	ExtraLen       int
}

// validate applies makeConfig's rules (config.ts); field names as there.
func (c *Config) validate() error {
	if c.ConfigID == unroutableConfig {
		return errors.New("config_id: 7 (0b111) is reserved for unroutable connection IDs and must not be configured")
	}
	if c.ConfigID < 0 || c.ConfigID > maxConfigID {
		return fmt.Errorf("config_id: must be between 0 and %d, got %d", maxConfigID, c.ConfigID)
	}
	if c.ServerIDLen < minServerIDLen || c.ServerIDLen > maxPlaintextLen-minNonceLen {
		return fmt.Errorf("server_id_len: must be between %d and %d, got %d", minServerIDLen, maxPlaintextLen-minNonceLen, c.ServerIDLen)
	}
	if c.NonceLen < minNonceLen || c.NonceLen > maxPlaintextLen-minServerIDLen {
		return fmt.Errorf("nonce_len: must be between %d and %d, got %d", minNonceLen, maxPlaintextLen-minServerIDLen, c.NonceLen)
	}
	if c.ServerIDLen+c.NonceLen > maxPlaintextLen {
		return fmt.Errorf("nonce_len: server_id_len + nonce_len must be at most %d, got %d + %d", maxPlaintextLen, c.ServerIDLen, c.NonceLen)
	}
	if c.Key != nil && len(c.Key) != keyLen {
		return fmt.Errorf("key: must be %d bytes (AES-128), got %d", keyLen, len(c.Key))
	}
	if c.ExtraLen < 0 || c.ExtraLen > maxCIDLen-1-c.ServerIDLen-c.NonceLen {
		return fmt.Errorf("extra_len: must be between 0 and %d, got %d", maxCIDLen-1-c.ServerIDLen-c.NonceLen, c.ExtraLen)
	}
	return nil
}

// CIDLen is the length of the CIDs a server mints with this config.
func (c *Config) CIDLen() int { return 1 + c.ServerIDLen + c.NonceLen + c.ExtraLen }

// Mode: no key = plaintext; a 16-octet block = single-pass; otherwise four-pass (§5.4).
func (c *Config) Mode() string {
	if c.Key == nil {
		return modePlaintext
	}
	if c.ServerIDLen+c.NonceLen == cipherBlockLength {
		return modeSinglePass
	}
	return modeFourPass
}

func (c *Config) same(o *Config) bool {
	return c.ConfigID == o.ConfigID && c.ServerIDLen == o.ServerIDLen && c.NonceLen == o.NonceLen &&
		c.ExtraLen == o.ExtraLen && c.LenSelfEncoded == o.LenSelfEncoded &&
		((c.Key == nil && o.Key == nil) || (c.Key != nil && o.Key != nil && string(c.Key) == string(o.Key)))
}

// Cipher is the block transform of one config (cipher.ts QuicLbCipher). Not safe for concurrent use.
type Cipher struct {
	mode    string
	block   cipher.Block
	plainN  int // server_id_len + nonce_len
	half    int
	odd     bool
	left    []byte
	right   []byte
	scratch [cipherBlockLength]byte
}

func NewCipher(c *Config) (*Cipher, error) {
	x := &Cipher{mode: c.Mode(), plainN: c.ServerIDLen + c.NonceLen}
	x.half = (x.plainN + 1) / 2
	x.odd = x.plainN%2 == 1
	x.left = make([]byte, x.half)
	x.right = make([]byte, x.half)
	if c.Key != nil {
		b, err := aes.NewCipher(c.Key)
		if err != nil {
			return nil, err
		}
		x.block = b
	}
	return x, nil
}

// Encrypt writes the transform of plaintext (server ID || nonce) into out[0:plainN].
func (x *Cipher) Encrypt(plaintext, out []byte) {
	switch x.mode {
	case modePlaintext:
		copy(out[:x.plainN], plaintext[:x.plainN])
	case modeSinglePass:
		x.block.Encrypt(out[:cipherBlockLength], plaintext[:cipherBlockLength])
	default:
		x.split(plaintext)
		x.round(1, x.left, x.right, true)
		x.round(2, x.right, x.left, false)
		x.round(3, x.left, x.right, true)
		x.round(4, x.right, x.left, false)
		x.join(out)
	}
}

// Decrypt recovers server ID || nonce from the block src[0:plainN] into out[0:plainN].
func (x *Cipher) Decrypt(src, out []byte) {
	switch x.mode {
	case modePlaintext:
		copy(out[:x.plainN], src[:x.plainN])
	case modeSinglePass:
		x.block.Decrypt(out[:cipherBlockLength], src[:cipherBlockLength])
	default:
		x.split(src)
		x.round(4, x.right, x.left, false)
		x.round(3, x.left, x.right, true)
		x.round(2, x.right, x.left, false)
		x.round(1, x.left, x.right, true)
		x.join(out)
	}
}

// split: two half_len halves, sharing the middle octet by nibbles when the length is odd (§5.4.2.3 step 2).
func (x *Cipher) split(src []byte) {
	copy(x.left, src[:x.half])
	copy(x.right, src[x.plainN>>1:x.plainN>>1+x.half])
	if x.odd {
		x.left[x.half-1] &= 0xf0
		x.right[0] &= 0x0f
	}
}

// round: target ^= truncate(AES(source || zeros || length || pass), half_len), then re-mask the shared nibble.
func (x *Cipher) round(pass byte, source, target []byte, targetIsRight bool) {
	b := x.scratch[:]
	copy(b, source)
	for i := x.half; i < 14; i++ {
		b[i] = 0
	}
	b[14] = byte(x.plainN)
	b[15] = pass
	x.block.Encrypt(b, b)
	for i := 0; i < x.half; i++ {
		target[i] ^= b[i]
	}
	if x.odd {
		if targetIsRight {
			target[0] &= 0x0f
		} else {
			target[x.half-1] &= 0xf0
		}
	}
}

func (x *Cipher) join(out []byte) {
	h := x.half
	if !x.odd {
		copy(out[:h], x.left)
		copy(out[h:2*h], x.right)
		return
	}
	copy(out[:h-1], x.left[:h-1])
	out[h-1] = x.left[h-1] | x.right[0]
	copy(out[h:2*h-1], x.right[1:])
}

// assembleCID lays out FirstOctet || encrypted block || extra octets (§5.2). low < 0: random low bits.
func assembleCID(c *Config, x *Cipher, plaintext []byte, low int, extra []byte) []byte {
	cid := make([]byte, c.CIDLen())
	var lowBits byte
	if c.LenSelfEncoded {
		lowBits = byte(len(cid) - 1)
	} else if low >= 0 {
		lowBits = byte(low) & 0x1f
	} else {
		var r [1]byte
		rand.Read(r[:])
		lowBits = r[0] & 0x1f
	}
	cid[0] = byte(c.ConfigID<<5) | lowBits
	x.Encrypt(plaintext, cid[1:])
	if c.ExtraLen > 0 {
		tail := cid[1+c.ServerIDLen+c.NonceLen:]
		if extra != nil {
			copy(tail, extra)
		} else {
			rand.Read(tail)
		}
	}
	return cid
}

// EncodeCID is the deterministic encoding from explicit parts (test vectors). low < 0: random low bits.
func EncodeCID(c *Config, serverID, nonce []byte, low int) ([]byte, error) {
	if len(serverID) != c.ServerIDLen {
		return nil, fmt.Errorf("server_id: must be %d bytes, got %d", c.ServerIDLen, len(serverID))
	}
	if len(nonce) != c.NonceLen {
		return nil, fmt.Errorf("nonce: must be %d bytes, got %d", c.NonceLen, len(nonce))
	}
	x, err := NewCipher(c)
	if err != nil {
		return nil, err
	}
	return assembleCID(c, x, append(append([]byte{}, serverID...), nonce...), low, nil), nil
}

// DecodeCID returns the server ID and nonce of a CID minted with c (no config-id check beyond the length).
func DecodeCID(c *Config, cid []byte) (serverID, nonce []byte, err error) {
	n := c.ServerIDLen + c.NonceLen
	if len(cid) < 1+n {
		return nil, nil, fmt.Errorf("cid: %d octets is shorter than 1 + %d", len(cid), n)
	}
	x, err := NewCipher(c)
	if err != nil {
		return nil, nil, err
	}
	out := make([]byte, n)
	x.Decrypt(cid[1:1+n], out)
	return out[:c.ServerIDLen], out[c.ServerIDLen:], nil
}

// MintUnroutable: codepoint 0b111, self-encoded length, random rest (§3.2; encoder.ts mintUnroutableCid).
func MintUnroutable(length int) []byte {
	cid := make([]byte, length)
	if length > 1 {
		rand.Read(cid[1:])
	}
	cid[0] = byte(unroutableConfig<<5) | byte(length-1)
	return cid
}

// Encoder mints CIDs for one (config, server ID) (encoder.ts CidEncoder): with a key the nonce is a counter from a
// random start that wraps, so no nonce repeats under the key until every value was used; without a key nonces are
// random. Not safe for concurrent use.
type Encoder struct {
	cfg       *Config
	serverID  []byte
	x         *Cipher
	plaintext []byte
	counter   bool
	issued    uint64
	space     uint64 // nonce values; 0 = 2^64 or more (never exhausted in practice)
}

func NewEncoder(c *Config, serverID []byte) (*Encoder, error) {
	if len(serverID) != c.ServerIDLen {
		return nil, fmt.Errorf("server_id: must be %d bytes for config %d, got %d", c.ServerIDLen, c.ConfigID, len(serverID))
	}
	x, err := NewCipher(c)
	if err != nil {
		return nil, err
	}
	e := &Encoder{cfg: c, serverID: append([]byte{}, serverID...), x: x, plaintext: make([]byte, c.ServerIDLen+c.NonceLen)}
	copy(e.plaintext, serverID)
	if c.NonceLen < 8 {
		e.space = 1 << (8 * c.NonceLen)
	}
	if c.Key != nil {
		e.counter = true
		if _, err := rand.Read(e.plaintext[c.ServerIDLen:]); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *Encoder) Exhausted() bool { return e.counter && e.space != 0 && e.issued >= e.space }

// Next mints a CID; the caller checks Exhausted() first.
func (e *Encoder) Next() []byte {
	if !e.counter {
		rand.Read(e.plaintext[e.cfg.ServerIDLen:])
	} else if e.issued > 0 {
		for i := len(e.plaintext) - 1; i >= e.cfg.ServerIDLen; i-- {
			e.plaintext[i]++
			if e.plaintext[i] != 0 {
				break
			}
		}
	}
	e.issued++
	return assembleCID(e.cfg, e.x, e.plaintext, -1, nil)
}

package main

// The CID generator: the Go side of lib/backend/generator.ts + kubernetes-source.ts. It reads DIR/configs.json
// (format "quiclb-rotation-state/1", lib/config/state-file.ts) and DIR/server-id (lib/backend/server-id-file.ts),
// mints with the first `active` config, and mints 0b111 CIDs while there is no usable config or server ID.
// quic-go fixes the CID length for the transport's life, so a later config of another length gets 0b111 CIDs of
// the fixed length.

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

const (
	stateFormat          = "quiclb-rotation-state/1"
	maxStateBytes        = 1 << 20
	maxServerIDFileBytes = 256
	maxEncoders          = 16
)

var (
	base64Key16 = regexp.MustCompile(`^[A-Za-z0-9+/]{22}(?:==)?$`)
	hexRe       = regexp.MustCompile(`^(?:[0-9a-fA-F]{2})*$`)
)

// LiveConfig is a config with its rotation state (active | accepting | draining).
type LiveConfig struct {
	Config *Config
	State  string
}

// ---- state file (lib/config/state-file.ts parseRotationState) ----------------------------------------------

func checkKeys(path string, o map[string]any, known ...string) error {
	for k := range o {
		ok := false
		for _, n := range known {
			if k == n {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%s.%s: unknown field; known fields: %s", path, k, strings.Join(known, ", "))
		}
	}
	return nil
}

func intField(path string, v any, present bool, min, max int, dflt *int) (int, error) {
	if !present {
		if dflt != nil {
			return *dflt, nil
		}
		return 0, fmt.Errorf("%s: is required (an integer %d..%d)", path, min, max)
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s: must be an integer", path)
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) {
		return 0, fmt.Errorf("%s: must be an integer", path)
	}
	if f < float64(min) || f > float64(max) {
		return 0, fmt.Errorf("%s: must be between %d and %d, got %v", path, min, max, f)
	}
	return int(f), nil
}

func parseTime(path string, v any) error {
	s, ok := v.(string)
	if ok {
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02"} {
			if _, err := time.Parse(layout, s); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("%s: must be an ISO 8601 time", path)
}

// parseRotationState validates the file like the TS parser; error messages name fields, never key bytes.
func parseRotationState(text []byte) ([]LiveConfig, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, errors.New("state_file: not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("state_file: not valid JSON (trailing data)")
	}
	o, ok := raw.(map[string]any)
	if !ok {
		return nil, errors.New("state_file: must be a mapping")
	}
	if err := checkKeys("state_file", o, "format", "server_id_length", "last_rotation_at", "configs"); err != nil {
		return nil, err
	}
	if f, _ := o["format"].(string); f != stateFormat {
		return nil, fmt.Errorf("state_file.format: must be %q", stateFormat)
	}
	sv, sp := o["server_id_length"]
	sidLen, err := intField("state_file.server_id_length", sv, sp, 1, 15, nil)
	if err != nil {
		return nil, err
	}
	if err := parseTime("state_file.last_rotation_at", o["last_rotation_at"]); err != nil {
		return nil, err
	}
	list, ok := o["configs"].([]any)
	if !ok || len(list) == 0 {
		return nil, errors.New("state_file.configs: must be a non-empty list")
	}
	var live []LiveConfig
	zero := 0
	for i, item := range list {
		p := fmt.Sprintf("state_file.configs[%d]", i)
		e, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: must be a mapping", p)
		}
		if err := checkKeys(p, e, "config_id", "nonce_length", "key", "length_self_encoded", "extra_length", "state", "since"); err != nil {
			return nil, err
		}
		c := &Config{ServerIDLen: sidLen}
		v, present := e["config_id"]
		if c.ConfigID, err = intField(p+".config_id", v, present, 0, 6, nil); err != nil {
			return nil, err
		}
		v, present = e["nonce_length"]
		if c.NonceLen, err = intField(p+".nonce_length", v, present, 4, 18, nil); err != nil {
			return nil, err
		}
		if k, present := e["key"]; present && k != nil {
			s, ok := k.(string)
			s = strings.TrimSpace(s)
			if !ok || !base64Key16.MatchString(s) {
				return nil, fmt.Errorf("%s.key: must be 16 bytes in base64 (24 characters ending in \"==\")", p)
			}
			key, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				key, err = base64.RawStdEncoding.DecodeString(s)
			}
			if err != nil || len(key) != keyLen {
				return nil, fmt.Errorf("%s.key: must decode to 16 bytes", p)
			}
			c.Key = key
		}
		if b, present := e["length_self_encoded"]; present {
			bv, ok := b.(bool)
			if !ok {
				return nil, fmt.Errorf("%s.length_self_encoded: must be true or false", p)
			}
			c.LenSelfEncoded = bv
		}
		v, present = e["extra_length"]
		if c.ExtraLen, err = intField(p+".extra_length", v, present, 0, 14, &zero); err != nil {
			return nil, err
		}
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("%s.%s", p, err.Error())
		}
		state := "active"
		if s, present := e["state"]; present {
			sv, _ := s.(string)
			if sv != "active" && sv != "accepting" && sv != "draining" {
				return nil, fmt.Errorf("%s.state: must be one of active, accepting, draining", p)
			}
			state = sv
		}
		if err := parseTime(p+".since", e["since"]); err != nil {
			return nil, err
		}
		for j, prev := range live {
			if prev.Config.ConfigID == c.ConfigID {
				return nil, fmt.Errorf("%s.config_id: %d is also the config_id of state_file.configs[%d]", p, c.ConfigID, j)
			}
		}
		live = append(live, LiveConfig{Config: c, State: state})
	}
	keyed := 0
	for j, l := range live {
		if l.Config.Key == nil {
			continue
		}
		keyed++
		for i := 0; i < j; i++ {
			if live[i].Config.Key != nil && bytes.Equal(live[i].Config.Key, l.Config.Key) {
				return nil, fmt.Errorf("state_file.configs[%d]: has the same key as state_file.configs[%d]", j, i)
			}
		}
	}
	if keyed != 0 && keyed != len(live) {
		return nil, errors.New("state_file.configs: mixes plaintext and encrypted configs")
	}
	return live, nil
}

// parseServerIDText: the downward-API file's text; nil (no error) when empty (server-id-file.ts).
func parseServerIDText(text []byte) ([]byte, error) {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return nil, nil
	}
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		s = s[2:]
	}
	if !hexRe.MatchString(s) {
		return nil, errors.New("server ID: expected an even number of hex digits")
	}
	id, _ := hex.DecodeString(s)
	if len(id) < minServerIDLen || len(id) > maxPlaintextLen-minNonceLen {
		return nil, fmt.Errorf("server ID: must be %d to %d octets (hex), got %d", minServerIDLen, maxPlaintextLen-minNonceLen, len(id))
	}
	return id, nil
}

// readSmall returns the file's content, or (nil, nil) when it does not exist.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// ---- the generator ------------------------------------------------------------------------------------------

// GeneratorInfo is what `ready` and `stats` report (generator.ts GeneratorInfo).
type GeneratorInfo struct {
	ActiveConfigID *int    `json:"activeConfigId"`
	ServerID       *string `json:"serverId"`
	CIDLength      int     `json:"cidLength"`
	Reason         *string `json:"reason"`
}

type fileKnown int

const (
	unknown fileKnown = iota
	missing
	good
)

// Generator implements quic.ConnectionIDGenerator. Safe for concurrent use.
type Generator struct {
	mu          sync.Mutex
	configsPath string
	sidPath     string
	// last raw content seen (nil = missing), to skip unchanged files and report a bad file once per change
	configsRaw, sidRaw []byte
	configsSeen        bool
	sidSeen            bool
	configsState       fileKnown
	sidState           fileKnown
	live               []LiveConfig
	sid                []byte // nil: empty file (not annotated yet)
	encoder            *Encoder
	encoders           []*Encoder
	reason             string // why there is no encoder ("" when there is one)
	fixedLen           int    // the transport's CID length, 0 until fixed
	lastMintReason     string // last reason a 0b111 CID was minted for (logged on change)
	log                func(string)
	onMint             func(cid []byte, unroutable bool)
}

var _ quic.ConnectionIDGenerator = (*Generator)(nil)

func NewGenerator(dir string, log func(string)) *Generator {
	return &Generator{
		configsPath: filepath.Join(dir, "configs.json"),
		sidPath:     filepath.Join(dir, "server-id"),
		log:         log,
		reason:      "not loaded",
	}
}

// Reload re-reads both files (cheap: two small reads; unchanged content is skipped) and logs changes (not when
// quiet: the start, whose state the `ready` line reports; file problems are logged always).
func (g *Generator) Reload(quiet bool) {
	g.mu.Lock()
	before := g.infoLocked()
	configsChanged := g.followFile(g.configsPath, maxStateBytes, &g.configsRaw, &g.configsSeen,
		parsedInto(&g.configsState, &g.live, parseRotationState))
	sidChanged := g.followFile(g.sidPath, maxServerIDFileBytes, &g.sidRaw, &g.sidSeen,
		parsedInto(&g.sidState, &g.sid, parseServerIDText))
	changed := configsChanged || sidChanged
	if changed {
		g.applyLocked()
	}
	after := g.infoLocked()
	g.mu.Unlock()
	if a, b := mustJSON(before), mustJSON(after); a != b && !quiet {
		g.log("generator: " + b)
	}
}

func sameRaw(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// unreadable stands in *raw for a file that could not be read (so the problem is logged once, not every reload).
var unreadable = []byte("\x00unreadable")

// followFile re-reads one of the two files into *raw and reports whether its content changed. A read error keeps
// the last good content (logged once); changed content goes to use (nil: the file is missing), and content use
// refuses is logged and leaves the last good state in force.
func (g *Generator) followFile(path string, limit int64, raw *[]byte, seen *bool, use func(b []byte) error) bool {
	b, err := readSmall(path, limit)
	if err != nil {
		if !*seen || !bytes.Equal(*raw, unreadable) {
			g.log(fmt.Sprintf("generator: %s: cannot read: %v (keeping the last good content)", path, err))
		}
		*raw, *seen = unreadable, true
		return false
	}
	if *seen && sameRaw(b, *raw) {
		return false
	}
	*raw, *seen = b, true
	if err := use(b); err != nil {
		g.log(fmt.Sprintf("generator: %s: %v (keeping the last good content)", path, err))
	}
	return true
}

// parsedInto makes followFile's use callback for one file: a missing file sets state to missing; content that
// parses sets the value and state to good; content that does not is refused (value and state stay as they were).
func parsedInto[T any](state *fileKnown, value *T, parse func([]byte) (T, error)) func(b []byte) error {
	return func(b []byte) error {
		if b == nil {
			*state = missing
			return nil
		}
		v, err := parse(b)
		if err != nil {
			return err
		}
		*state, *value = good, v
		return nil
	}
}

func (g *Generator) sourceReason() string {
	switch {
	case g.configsState == unknown:
		return g.configsPath + " is invalid (no good version read yet)"
	case g.configsState == missing:
		return g.configsPath + " does not exist (mount the Secret <name>-quiclb-configs)"
	case g.sidState == unknown:
		return g.sidPath + " is invalid (no good version read yet)"
	case g.sidState == missing:
		return g.sidPath + " does not exist (mount the pod annotation quiclb.io/server-id with the downward API)"
	case g.sid == nil:
		return g.sidPath + " is empty: the operator has not annotated this pod with quiclb.io/server-id yet"
	}
	return ""
}

// applyLocked: generator.ts apply(): pick the active config's encoder (kept per (config, server ID) so a nonce
// counter survives a pause), or a reason for 0b111.
func (g *Generator) applyLocked() {
	live := g.live
	if g.configsState != good {
		live = nil
	}
	var active *LiveConfig
	for i := range live {
		if live[i].State == "active" {
			active = &live[i]
			break
		}
	}
	reason := g.sourceReason()
	if reason == "" && active == nil {
		reason = "no active config"
	}
	if reason == "" && len(g.sid) != active.Config.ServerIDLen {
		reason = fmt.Sprintf("the server ID is %d octets but config %d has server_id_length %d", len(g.sid), active.Config.ConfigID, active.Config.ServerIDLen)
	}
	if len(live) > 0 {
		kept := g.encoders[:0]
		for _, e := range g.encoders {
			for _, l := range live {
				if l.Config.same(e.cfg) {
					kept = append(kept, e)
					break
				}
			}
		}
		g.encoders = kept
	}
	if reason != "" {
		g.encoder, g.reason = nil, reason
		return
	}
	var enc *Encoder
	for _, e := range g.encoders {
		if e.cfg.same(active.Config) && bytes.Equal(e.serverID, g.sid) {
			enc = e
			break
		}
	}
	if enc == nil {
		var err error
		if enc, err = NewEncoder(active.Config, g.sid); err != nil {
			g.encoder, g.reason = nil, err.Error()
			return
		}
		if len(g.encoders) >= maxEncoders {
			g.encoders = g.encoders[1:]
		}
		g.encoders = append(g.encoders, enc)
	}
	g.encoder, g.reason = enc, ""
}

// whyUnroutableLocked: "" when Next mints QUIC-LB CIDs.
func (g *Generator) whyUnroutableLocked() string {
	if g.encoder == nil {
		return g.reason
	}
	if g.encoder.Exhausted() {
		return fmt.Sprintf("config %d: every nonce value has been used under this key; a new config (new key) is needed", g.encoder.cfg.ConfigID)
	}
	if g.fixedLen != 0 && g.encoder.cfg.CIDLen() != g.fixedLen {
		return fmt.Sprintf("config %d makes %d-octet CIDs but this quic-go transport's CID length is fixed at %d (the active config at start)",
			g.encoder.cfg.ConfigID, g.encoder.cfg.CIDLen(), g.fixedLen)
	}
	return ""
}

func (g *Generator) cidLenLocked() int {
	if g.fixedLen != 0 {
		return g.fixedLen
	}
	if g.encoder != nil {
		return g.encoder.cfg.CIDLen()
	}
	n := 8
	for _, l := range g.live {
		n = max(n, l.Config.CIDLen())
	}
	return min(n, maxCIDLen)
}

func (g *Generator) infoLocked() GeneratorInfo {
	info := GeneratorInfo{CIDLength: g.cidLenLocked()}
	if g.sid != nil && g.sidState == good {
		s := hex.EncodeToString(g.sid)
		info.ServerID = &s
	}
	if why := g.whyUnroutableLocked(); why != "" {
		info.Reason = &why
	} else {
		id := g.encoder.cfg.ConfigID
		info.ActiveConfigID = &id
	}
	return info
}

func (g *Generator) Info() GeneratorInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.infoLocked()
}

// Fix sets the transport's CID length from the usable active config; false when there is none.
func (g *Generator) Fix() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.whyUnroutableLocked() != "" {
		return false
	}
	g.fixedLen = g.encoder.cfg.CIDLen()
	return true
}

// GenerateConnectionID: QUIC-LB with the active config, or 0b111 of the fixed length (logged on each new reason).
func (g *Generator) GenerateConnectionID() (quic.ConnectionID, error) {
	g.mu.Lock()
	var cid []byte
	unroutable := false
	why := g.whyUnroutableLocked()
	if why == "" {
		cid = g.encoder.Next()
		g.lastMintReason = ""
		if g.encoder.Exhausted() {
			defer g.log("generator: config nonces exhausted; minting 0b111 CIDs from now on")
		}
	} else {
		cid = MintUnroutable(g.cidLenLocked())
		unroutable = true
		if why != g.lastMintReason {
			g.lastMintReason = why
			defer g.log("minted 0b111 because " + why)
		}
	}
	g.mu.Unlock()
	if g.onMint != nil {
		g.onMint(cid, unroutable)
	}
	return quic.ConnectionIDFromBytes(cid), nil
}

func (g *Generator) ConnectionIDLen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fixedLen
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

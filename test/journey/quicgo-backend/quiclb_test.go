package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The draft's vectors, the same files test/quiclb-vectors.test.ts checks the TypeScript codec against;
// QUICLB_VECTORS_DIR overrides the place.
func vectorsDir() string {
	if d := os.Getenv("QUICLB_VECTORS_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "fixtures", "quic-lb")
}

type vector struct {
	ID             string  `json:"id"`
	Mode           string  `json:"mode"`
	ConfigID       int     `json:"config_id"`
	ServerIDLen    int     `json:"server_id_len"`
	NonceLen       *int    `json:"nonce_len"`
	Key            *string `json:"key"`
	ServerID       string  `json:"server_id"`
	Nonce          string  `json:"nonce"`
	CID            string  `json:"cid"`
	LenSelfEncoded bool    `json:"len_self_encoded"`
	Status         string  `json:"status"`
}

type decodeCase struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Configs []struct {
		ConfigID    int    `json:"config_id"`
		ServerIDLen int    `json:"server_id_len"`
		NonceLen    int    `json:"nonce_len"`
		Key         string `json:"key"`
	} `json:"decoder_configs"`
	CID      string  `json:"cid"`
	Expected *string `json:"expected_server_id"`
}

func loadVectors(t *testing.T, file string) ([]vector, []decodeCase) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir(), file))
	if err != nil {
		t.Fatalf("vectors not available: %v", err)
	}
	var f struct {
		Vectors     []vector     `json:"vectors"`
		DecodeCases []decodeCase `json:"decode_cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.Vectors, f.DecodeCases
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

func checkVectors(t *testing.T, vs []vector) map[string]int {
	modes := map[string]int{}
	for _, v := range vs {
		if v.Status == "inconsistent-in-draft" || v.NonceLen == nil {
			continue
		}
		c := &Config{ConfigID: v.ConfigID, ServerIDLen: v.ServerIDLen, NonceLen: *v.NonceLen, LenSelfEncoded: v.LenSelfEncoded}
		if v.Key != nil {
			c.Key = unhex(t, *v.Key)
		}
		if err := c.validate(); err != nil {
			t.Errorf("%s: %v", v.ID, err)
			continue
		}
		if c.Mode() != v.Mode {
			t.Errorf("%s: mode %s, vector says %s", v.ID, c.Mode(), v.Mode)
		}
		want := unhex(t, v.CID)
		got, err := EncodeCID(c, unhex(t, v.ServerID), unhex(t, v.Nonce), int(want[0]&0x1f))
		if err != nil {
			t.Errorf("%s: %v", v.ID, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s (%s): encode %x, want %x", v.ID, v.Mode, got, want)
		}
		sid, nonce, err := DecodeCID(c, want)
		if err != nil || hex.EncodeToString(sid) != v.ServerID || hex.EncodeToString(nonce) != v.Nonce {
			t.Errorf("%s (%s): decode %x %x %v, want %s %s", v.ID, v.Mode, sid, nonce, err, v.ServerID, v.Nonce)
		}
		modes[v.Mode]++
	}
	return modes
}

// requireEveryMode fails the test unless vectors of every cipher mode were checked.
func requireEveryMode(t *testing.T, modes map[string]int) {
	t.Helper()
	for _, m := range []string{modePlaintext, modeSinglePass, modeFourPass} {
		if modes[m] == 0 {
			t.Errorf("no %s vector checked", m)
		}
	}
}

func TestDraftVectors(t *testing.T) {
	vs, _ := loadVectors(t, "vectors-draft.json")
	modes := checkVectors(t, vs)
	requireEveryMode(t, modes)
	t.Logf("draft vectors checked per mode: %v", modes)
}

func TestOracleVectors(t *testing.T) {
	vs, cases := loadVectors(t, "vectors-oracle.json")
	modes := checkVectors(t, vs)
	requireEveryMode(t, modes)
	// load-balancer decode cases: the server ID a decoder extracts, or none
	for _, dc := range cases {
		cid := unhex(t, dc.CID)
		var got *string
		id := int(cid[0] >> 5)
		for _, k := range dc.Configs {
			if k.ConfigID != id {
				continue
			}
			c := &Config{ConfigID: k.ConfigID, ServerIDLen: k.ServerIDLen, NonceLen: k.NonceLen}
			if k.Key != "" {
				c.Key = unhex(t, k.Key)
			}
			if sid, _, err := DecodeCID(c, cid); err == nil {
				s := hex.EncodeToString(sid)
				got = &s
			}
		}
		if (got == nil) != (dc.Expected == nil) || (got != nil && *got != *dc.Expected) {
			t.Errorf("%s (%s): got %v, want %v", dc.ID, dc.Kind, deref(got), deref(dc.Expected))
		}
	}
	t.Logf("oracle vectors checked per mode: %v; decode cases: %d", modes, len(cases))
}

func deref(s *string) string {
	if s == nil {
		return "<none>"
	}
	return *s
}

// writeKubelet writes DIR/..<ts>/{configs.json,server-id}, DIR/..data -> it, DIR/<file> -> ..data/<file>, like
// the kubelet's atomic writer.
func writeKubelet(t *testing.T, dir, configs, sid string) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..%d", time.Now().UnixNano()))
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ts, "configs.json"), []byte(configs), 0o600)
	os.WriteFile(filepath.Join(ts, "server-id"), []byte(sid), 0o644)
	tmp := filepath.Join(dir, "..data_tmp")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"configs.json", "server-id"} {
		if _, err := os.Lstat(filepath.Join(dir, f)); err != nil {
			os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f))
		}
	}
}

func stateFile(entries ...string) string {
	return `{"format":"quiclb-rotation-state/1","server_id_length":2,"last_rotation_at":"2026-01-01T00:00:00.000Z","configs":[` +
		strings.Join(entries, ",") + `]}`
}

func entry(id, nonce int, key []byte, state string) string {
	return fmt.Sprintf(`{"config_id":%d,"nonce_length":%d,"key":%q,"length_self_encoded":false,"extra_length":0,"state":%q,"since":"2026-01-01T00:00:00.000Z"}`,
		id, nonce, base64.StdEncoding.EncodeToString(key), state)
}

func TestGeneratorFollowsFiles(t *testing.T) {
	dir := t.TempDir()
	var logs []string
	g := NewGenerator(dir, func(s string) { logs = append(logs, s) })
	g.Reload(false)
	if g.Fix() {
		t.Fatal("usable without files")
	}
	key1 := bytes.Repeat([]byte{1}, 16)
	key2 := bytes.Repeat([]byte{2}, 16)
	writeKubelet(t, dir, stateFile(entry(1, 17, key1, "active"), entry(2, 17, key2, "accepting")), "0a0b")
	g.Reload(false)
	if !g.Fix() || g.ConnectionIDLen() != 20 {
		t.Fatalf("not usable: %+v", g.Info())
	}
	c1 := &Config{ConfigID: 1, ServerIDLen: 2, NonceLen: 17, Key: key1}
	seen := map[string]bool{}
	var prevNonce []byte
	for i := 0; i < 1000; i++ {
		cid, _ := g.GenerateConnectionID()
		b := cid.Bytes()
		if len(b) != 20 || b[0]>>5 != 1 {
			t.Fatalf("cid %x", b)
		}
		sid, nonce, _ := DecodeCID(c1, b)
		if hex.EncodeToString(sid) != "0a0b" || seen[string(nonce)] {
			t.Fatalf("cid %x: sid %x, repeated nonce %v", b, sid, seen[string(nonce)])
		}
		if prevNonce != nil && !bytes.Equal(incr(prevNonce), nonce) {
			t.Fatalf("nonce %x does not follow %x", nonce, prevNonce)
		}
		prevNonce = nonce
		seen[string(nonce)] = true
	}
	// rotation: config 2 becomes active
	c2 := &Config{ConfigID: 2, ServerIDLen: 2, NonceLen: 17, Key: key2}
	nonce2 := func(step string) []byte { // the next CID: config 2's, for server 0a0b; its nonce
		t.Helper()
		cid, _ := g.GenerateConnectionID()
		b := cid.Bytes()
		if len(b) != 20 || b[0]>>5 != 2 {
			t.Fatalf("%s: cid %x is not config 2's", step, b)
		}
		sid, nonce, err := DecodeCID(c2, b)
		if err != nil || hex.EncodeToString(sid) != "0a0b" {
			t.Fatalf("%s: cid %x: sid %x, %v", step, b, sid, err)
		}
		return nonce
	}
	writeKubelet(t, dir, stateFile(entry(1, 17, key1, "draining"), entry(2, 17, key2, "active")), "0a0b")
	g.Reload(false)
	last := nonce2("after rotation")
	// invalid file: last good content stays (the same encoder: its counter goes on)
	writeKubelet(t, dir, "{not json", "0a0b")
	g.Reload(false)
	if n := nonce2("after invalid file"); !bytes.Equal(n, incr(last)) {
		t.Fatalf("after invalid file: nonce %x does not follow %x", n, last)
	} else {
		last = n
	}
	// a config of another CID length (config 2 stays live, accepting): 0b111 CIDs of the fixed length
	writeKubelet(t, dir, stateFile(entry(2, 17, key2, "accepting"), entry(3, 8, key1, "active")), "0a0b")
	g.Reload(false)
	cid, _ := g.GenerateConnectionID()
	if b := cid.Bytes(); len(b) != 20 || b[0] != 0xe0|19 {
		t.Fatalf("other length: %x", b)
	}
	if info := g.Info(); info.ActiveConfigID != nil || info.Reason == nil || !strings.Contains(*info.Reason, "fixed at 20") {
		t.Fatalf("info %+v", info)
	}
	// empty server ID: 0b111
	writeKubelet(t, dir, stateFile(entry(2, 17, key2, "active")), "")
	g.Reload(false)
	if cid, _ := g.GenerateConnectionID(); cid.Bytes()[0]>>5 != 7 {
		t.Fatalf("empty server id: %x", cid.Bytes())
	}
	// back: config 2's encoder was kept through both pauses (the config stayed in the file), so its counter
	// continues where it stopped: no nonce repeats under key2 (a new encoder would start at a random nonce)
	writeKubelet(t, dir, stateFile(entry(2, 17, key2, "active")), "0a0b")
	g.Reload(false)
	if n := nonce2("restored"); !bytes.Equal(n, incr(last)) {
		t.Fatalf("restored: nonce %x does not follow config 2's last nonce %x", n, last)
	}
	for _, l := range logs {
		if strings.Contains(l, base64.StdEncoding.EncodeToString(key1)) || strings.Contains(l, hex.EncodeToString(key1)) {
			t.Fatalf("a log line has the key: %s", l)
		}
	}
	t.Logf("%d log lines, e.g. %q", len(logs), logs[len(logs)-1])
}

func incr(b []byte) []byte {
	out := append([]byte{}, b...)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			break
		}
	}
	return out
}

func TestStateFileRejects(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 16)
	bad := []string{
		`[]`,
		stateFile(),
		strings.Replace(stateFile(entry(1, 17, key, "active")), `"format"`, `"formt"`, 1),
		stateFile(entry(1, 18, key, "active")), // 2 + 18 > 19
		stateFile(entry(7, 8, key, "active")),
		stateFile(entry(1, 8, key, "active"), entry(1, 9, bytes.Repeat([]byte{8}, 16), "accepting")),
		stateFile(entry(1, 8, key, "active"), entry(2, 9, key, "accepting")),
		stateFile(strings.Replace(entry(1, 8, key, "active"), `"active"`, `"live"`, 1)),
	}
	for i, s := range bad {
		if _, err := parseRotationState([]byte(s)); err == nil {
			t.Errorf("case %d accepted", i)
		} else if strings.Contains(err.Error(), base64.StdEncoding.EncodeToString(key)) {
			t.Errorf("case %d: error quotes the key", i)
		}
	}
	if _, err := parseRotationState([]byte(stateFile(entry(1, 17, key, "active")))); err != nil {
		t.Fatal(err)
	}
}

func TestBody(t *testing.T) {
	if len(bodyBlock) != 65536 || sizeOfPath("/1000000") != 1000000 || sizeOfPath("/67108865") != -1 || sizeOfPath("/x") != -1 || sizeOfPath("/1234567890") != -1 {
		t.Fatal("body/path rules")
	}
}

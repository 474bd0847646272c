package versions_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/outboxrelay/outbox/sdk/versions"
)

// Version 1.0 of user.registered had one "name"; 2.0 splits it.
type userRegisteredV1 struct {
	Name string `json:"name"`
}

type userRegisteredV2 struct {
	First string `json:"first"`
	Last  string `json:"last"`
}

func (userRegisteredV1) EventType() string     { return "user.registered" }
func (userRegisteredV1) SchemaVersion() string { return "1.0" }
func (userRegisteredV2) EventType() string     { return "user.registered" }
func (userRegisteredV2) SchemaVersion() string { return "2.0" }

func Example() {
	r := versions.NewRegistry()
	versions.Register[userRegisteredV2](r)
	versions.Upcast(r, func(v userRegisteredV1) (userRegisteredV2, error) {
		first, last, _ := strings.Cut(v.Name, " ")
		return userRegisteredV2{First: first, Last: last}, nil
	})

	// Events as stored: schema_version and payload.
	for _, stored := range []struct{ version, payload string }{
		{"1.0", `{"name":"Ada Lovelace"}`},
		{"2.0", `{"first":"Alan","last":"Turing"}`},
		{"2.3", `{"first":"Grace","last":"Hopper","middle":"Brewster"}`}, // newer minor: compatible
		{"3.0", `{"given":"Edsger"}`},                                    // newer major: unknown
	} {
		u, err := versions.Decode[userRegisteredV2](r, "user.registered", stored.version, []byte(stored.payload))
		if errors.Is(err, versions.ErrUnknownMajor) {
			fmt.Println(stored.version, "->", err)
			continue
		}
		fmt.Printf("%s -> %+v\n", stored.version, u)
	}
	// Output:
	// 1.0 -> {First:Ada Last:Lovelace}
	// 2.0 -> {First:Alan Last:Turing}
	// 2.3 -> {First:Grace Last:Hopper}
	// 3.0 -> versions: user.registered 3.0 (reader 2.0): unknown major version: deploy a reader that knows this version before writers produce it
}

// Registry.Decode returns the registered Go type, for a type switch.
func ExampleRegistry_Decode() {
	r := versions.NewRegistry()
	versions.Register[userRegisteredV2](r)
	v, err := r.Decode("user.registered", "2.0", []byte(`{"first":"Barbara","last":"Liskov"}`))
	switch u := v.(type) {
	case userRegisteredV2:
		fmt.Println("registered:", u.First, u.Last)
	default:
		fmt.Println("error:", err)
	}
	// Output:
	// registered: Barbara Liskov
}

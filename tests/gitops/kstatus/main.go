// Command kstatus prints what kstatus (the library Flux, kpt and `kubectl wait`-style tools
// use) concludes about one Kubernetes object: {"status": ..., "message": ...} as JSON.
//
// It reads one object, JSON or YAML, from stdin. The optiserve tests feed it OptimizedModel
// objects whose status the operator's pure condition logic wrote, so the test checks what a
// GitOps tool really sees rather than our reading of kstatus's documentation.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func run(in io.Reader, out io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	// UnmarshalJSON keeps integers as int64, which kstatus's generation checks require.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(asJSON); err != nil {
		return fmt.Errorf("decoding the object: %w", err)
	}
	result, err := status.Compute(obj)
	if err != nil {
		return fmt.Errorf("computing status: %w", err)
	}
	return json.NewEncoder(out).Encode(verdict{Status: string(result.Status), Message: result.Message})
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

package executortest_test

import (
	"context"
	"fmt"

	"github.com/incusexec/incusexec/executor/executortest"
	"github.com/incusexec/incusexec/executor/fake"
)

// The suite as a plain function: every check against one executor (here
// the in-memory fake), all failures joined into one error. A backend's own
// test calls Run instead, which makes each check a subtest.
func ExampleTest() {
	err := executortest.Test(context.Background(), fake.New(), executortest.Options{})
	fmt.Println("fake conforms:", err == nil)
	// Output: fake conforms: true
}

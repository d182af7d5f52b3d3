package fake

import (
	"context"
	"fmt"
)

// Op names an operation of the executor or of an instance, for FailOn and
// the record of calls.
type Op string

// The operations, named after the methods.
const (
	OpAvailable   Op = "Available"
	OpEnsureImage Op = "EnsureImage"
	OpRemoveImage Op = "RemoveImage"
	OpCreate      Op = "Create"
	OpStatistics  Op = "Statistics"
	OpList        Op = "List"
	OpStart       Op = "Start"
	OpStop        Op = "Stop"
	OpRestart     Op = "Restart"
	OpDelete      Op = "Delete"
	OpIsStarted   Op = "IsStarted"
	OpExec        Op = "Exec"
	OpPush        Op = "Push"
	OpPull        Op = "Pull"
	OpStat        Op = "Stat"
	OpMkdir       Op = "Mkdir"
	OpPushTree    Op = "PushTree"
	OpPullTree    Op = "PullTree"
	OpEnsureUser  Op = "EnsureUser"
	OpMount       Op = "Mount"
	OpUnmount     Op = "Unmount"
	OpStats       Op = "Stats"
)

// Call is one recorded call.
type Call struct {
	Op Op
	// Instance is the instance's name ("" for executor calls and failed
	// creations).
	Instance string
	// Args are the command of Exec, the path of file operations, the
	// alias of Mount and Unmount, the user of EnsureUser.
	Args []string
	// Err is what the call returned.
	Err error
}

func (c Call) String() string {
	s := string(c.Op)
	if c.Instance != "" {
		s += " " + c.Instance
	}
	if len(c.Args) > 0 {
		s += fmt.Sprintf(" %q", c.Args)
	}
	if c.Err != nil {
		s += ": " + c.Err.Error()
	}
	return s
}

type fault struct {
	op  Op
	n   int
	err error
}

// FailOn makes the n-th call of op (counting from 1 since the executor was
// made, across all its instances) fail with err before doing anything;
// n = 0 makes every call fail. Later rules for the same call win.
func (e *Executor) FailOn(op Op, n int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, fault{op: op, n: n, err: err})
}

// Calls returns the calls made so far, in order of completion.
func (e *Executor) Calls() []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Call(nil), e.calls...)
}

// CallCount returns how many times op was called.
func (e *Executor) CallCount(op Op) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counts[op]
}

// enter counts a call of op and returns the injected failure or ctx's error.
func (e *Executor) enter(ctx context.Context, op Op) error {
	e.mu.Lock()
	if e.counts == nil {
		e.counts = map[Op]int{}
	}
	e.counts[op]++
	n := e.counts[op]
	var err error
	for i := len(e.faults) - 1; i >= 0; i-- {
		if f := e.faults[i]; f.op == op && (f.n == 0 || f.n == n) {
			err = f.err
			break
		}
	}
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return ctx.Err()
}

func (e *Executor) record(op Op, inst string, args []string, err *error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, Call{Op: op, Instance: inst, Args: args, Err: *err})
}

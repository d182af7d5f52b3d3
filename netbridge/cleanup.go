package netbridge

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"

	"github.com/incusexec/incusexec/executor"
)

// Cleanup removes the profiles, networks and isolation ACLs labelled with
// owner, as ISM's -clean-network does. When any of them is still used by an
// instance, or by an object owner does not own, it removes nothing and
// returns ErrInUse naming every such object and its users. Objects without
// owner's label are never touched. It reports what it deleted.
func (m *Manager) Cleanup(ctx context.Context, owner string) ([]Change, error) {
	if err := validateOwner(owner); err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	profiles, err := m.c.GetProfiles()
	if err != nil {
		return nil, fmt.Errorf("cleanup %s: list profiles: %w", owner, err)
	}
	networks, err := m.c.GetNetworks()
	if err != nil {
		return nil, fmt.Errorf("cleanup %s: list networks: %w", owner, err)
	}
	acls, err := m.c.GetNetworkACLs()
	if err != nil {
		return nil, fmt.Errorf("cleanup %s: list network ACLs: %w", owner, err)
	}

	// What is going away: users among these do not keep anything alive.
	doomed := map[string]bool{}
	var plan []Change
	for _, p := range profiles {
		if p.Name != "default" && p.Config[executor.OwnerKey] == owner {
			plan = append(plan, Change{Kind: KindProfile, Name: p.Name, Action: Deleted})
			doomed["profiles/"+p.Name] = true
		}
	}
	for _, n := range networks {
		if n.Managed && n.Config[executor.OwnerKey] == owner {
			plan = append(plan, Change{Kind: KindNetwork, Name: n.Name, Action: Deleted})
			doomed["networks/"+n.Name] = true
		}
	}
	for _, a := range acls {
		if a.Config[executor.OwnerKey] == owner {
			plan = append(plan, Change{Kind: KindACL, Name: a.Name, Action: Deleted})
		}
	}

	var busy []string
	note := func(kind, name string, usedBy []string) {
		var users []string
		for _, u := range usedBy {
			if what := describeUser(u); !doomed[what] {
				users = append(users, strings.Replace(what, "s/", " ", 1))
			}
		}
		if len(users) > 0 {
			slices.Sort(users)
			busy = append(busy, fmt.Sprintf("%s %s is used by %s", kind, name, strings.Join(users, ", ")))
		}
	}
	for _, p := range profiles {
		if doomed["profiles/"+p.Name] {
			note(KindProfile, p.Name, p.UsedBy)
		}
	}
	for _, n := range networks {
		if doomed["networks/"+n.Name] {
			note(KindNetwork, n.Name, n.UsedBy)
		}
	}
	for _, a := range acls {
		if a.Config[executor.OwnerKey] == owner {
			note(KindACL, a.Name, a.UsedBy)
		}
	}
	if len(busy) > 0 {
		return nil, fmt.Errorf("%w: cleanup of %q removed nothing: %s", ErrInUse, owner, strings.Join(busy, "; "))
	}

	// Users first: profiles name networks, networks name ACLs.
	var done []Change
	for _, c := range plan {
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("cleanup %s: %w", owner, err)
		}
		switch c.Kind {
		case KindProfile:
			err = m.c.DeleteProfile(c.Name)
		case KindNetwork:
			err = m.deleteNetwork(ctx, c.Name)
		case KindACL:
			err = m.c.DeleteNetworkACL(c.Name)
		}
		if err != nil && !isNotFound(err) {
			return done, fmt.Errorf("cleanup %s: delete %s %s: %w", owner, c.Kind, c.Name, err)
		}
		m.log.Info("deleted", "kind", c.Kind, "name", c.Name, "owner", owner)
		done = append(done, c)
	}
	return done, nil
}

// describeUser turns a used_by URL (/1.0/instances/c1?project=p) into
// "instances/c1" ("instances/p/c1" outside the default project).
func describeUser(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	dir, name := path.Split(strings.TrimPrefix(parsed.Path, "/1.0/"))
	if project := parsed.Query().Get("project"); project != "" && project != "default" {
		name = project + "/" + name
	}
	return dir + name
}

// deleteNetwork deletes a network, retrying a few times on transient server
// errors (see isTransient).
func (m *Manager) deleteNetwork(ctx context.Context, name string) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = m.c.DeleteNetwork(name)
		if err == nil || !again(err, attempt) {
			return err
		}
		m.log.Warn("deleting network failed; retrying", "network", name, "attempt", attempt, "err", err)
		if cerr := pause(ctx, attempt); cerr != nil {
			return errors.Join(err, cerr)
		}
	}
}

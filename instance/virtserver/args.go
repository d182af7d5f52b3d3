package virtserver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/incusexec/incusexec/instance"
)

// ErrUsage says that the server's command line is wrong.
var ErrUsage = errors.New("bad arguments")

// Args are the command-line arguments of autopkgtest-virt-incus, which
// this server takes unchanged:
//
//	[-d|--debug] [--vm] IMAGE [--] [incus launch arguments...]
//
// The launch arguments understood are -p/--profile, -c/--config,
// -s/--storage, -n/--network, --vm, -e/--ephemeral (every testbed is
// ephemeral anyway) and --no-profiles; anything else is refused by name.
type Args struct {
	Image string
	VM    bool
	Debug bool
	// Spec is the instance the launch arguments describe (Image and VM
	// set too).
	Spec instance.Spec
}

// ParseArgs parses autopkgtest-virt-incus arguments.
func ParseArgs(args []string) (Args, error) {
	var a Args
	i := 0
	for ; i < len(args); i++ {
		s := args[i]
		switch {
		case s == "-d" || s == "--debug":
			a.Debug = true
		case s == "--vm":
			a.VM = true
		case s == "--incus":
			// the stock server's own selector: this is Incus anyway
		case s == "-r" || s == "--remote" || strings.HasPrefix(s, "--remote="):
			return a, fmt.Errorf("%w: %s: name the daemon with --socket, --remote or --config before the command instead", ErrUsage, s)
		case s == "-h" || s == "--help":
			return a, fmt.Errorf("%w: usage: [-d] [--vm] IMAGE [-- incus launch arguments]", ErrUsage)
		case strings.HasPrefix(s, "-") && s != "-":
			return a, fmt.Errorf("%w: unknown option %q (before IMAGE: -d, --vm)", ErrUsage, s)
		default:
			a.Image = s
		}
		if a.Image != "" {
			i++
			break
		}
	}
	if a.Image == "" {
		return a, fmt.Errorf("%w: missing IMAGE (usage: [-d] [--vm] IMAGE [-- incus launch arguments])", ErrUsage)
	}
	launch := args[i:]
	if len(launch) > 0 && launch[0] == "--" {
		launch = launch[1:]
	}
	spec := instance.Spec{Image: a.Image, VM: a.VM}
	for j := 0; j < len(launch); j++ {
		opt := launch[j]
		val, hasVal := "", false
		if k, v, ok := strings.Cut(opt, "="); ok && strings.HasPrefix(opt, "--") {
			opt, val, hasVal = k, v, true
		}
		needVal := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if j+1 >= len(launch) {
				return "", fmt.Errorf("%w: launch argument %s needs a value", ErrUsage, opt)
			}
			j++
			return launch[j], nil
		}
		switch opt {
		case "-p", "--profile":
			v, err := needVal()
			if err != nil {
				return a, err
			}
			if v == "" {
				return a, fmt.Errorf("%w: launch argument %s: empty profile name", ErrUsage, opt)
			}
			spec.Profiles = append(spec.Profiles, v)
		case "--no-profiles":
			spec.Profiles = []string{}
		case "-c", "--config":
			v, err := needVal()
			if err != nil {
				return a, err
			}
			k, cv, ok := strings.Cut(v, "=")
			if !ok || k == "" {
				return a, fmt.Errorf("%w: launch argument %s %q: want KEY=VALUE", ErrUsage, opt, v)
			}
			if spec.Config == nil {
				spec.Config = map[string]string{}
			}
			spec.Config[k] = cv
		case "-s", "--storage":
			v, err := needVal()
			if err != nil {
				return a, err
			}
			device(&spec, "root", map[string]string{"type": "disk", "path": "/", "pool": v})
		case "-n", "--network":
			v, err := needVal()
			if err != nil {
				return a, err
			}
			device(&spec, "eth0", map[string]string{"type": "nic", "network": v, "name": "eth0"})
		case "--vm":
			spec.VM, a.VM = true, true
		case "-e", "--ephemeral":
		default:
			return a, fmt.Errorf("%w: launch argument %q is not supported (supported: --profile, --config, --storage, --network, --vm, --ephemeral, --no-profiles)", ErrUsage, launch[j])
		}
	}
	a.Spec = spec
	return a, nil
}

func device(spec *instance.Spec, name string, d map[string]string) {
	if spec.Devices == nil {
		spec.Devices = map[string]map[string]string{}
	}
	spec.Devices[name] = d
}

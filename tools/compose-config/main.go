// compose-config loads a compose file with compose-go, the loader behind
// `docker compose config`, and prints the resolved project as JSON.
//
//	compose-config docker-compose.yml > project.json
//
// As `docker compose --profile '*' config` does: the project directory is
// the file's directory, variables come from the environment and a `.env`
// beside the file, interpolation, schema validation and consistency checks
// are on, and every profile is enabled so that every service is loaded.
// A load error is printed as one line, `compose: <error>`, and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/sirupsen/logrus"
)

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: compose-config FILE"))
	}
	// Loader warnings (an unset variable, an obsolete key) go to stderr, one
	// JSON object a line: {"level":"warning","msg":"..."}.
	logrus.SetFormatter(&logrus.JSONFormatter{DisableTimestamp: true})
	logrus.SetOutput(os.Stderr)

	file := os.Args[1]
	options, err := cli.NewProjectOptions(
		[]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithOsEnv,
		cli.WithEnvFiles(), // the .env in the working directory, if any
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	// Errors can span lines (YAML errors do): keep them to one.
	fmt.Fprintln(os.Stderr, "compose: "+strings.Join(strings.Fields(err.Error()), " "))
	os.Exit(1)
}

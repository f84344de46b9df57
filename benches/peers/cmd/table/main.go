// Command table prints the peers' results next to driftwarden's criterion
// figures: table -criterion target/criterion argocd.jsonl flux.jsonl ...
package main

import (
	"flag"
	"fmt"
	"os"

	"driftwarden.dev/benches/peers"
)

func main() {
	dir := flag.String("criterion", "target/criterion", "criterion's output directory")
	flag.Parse()
	crit, err := peers.ReadCriterion(*dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "driftwarden's figures:", err)
		os.Exit(1)
	}
	var all []peers.Result
	for _, path := range flag.Args() {
		results, err := peers.ReadJSON(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		all = append(all, results...)
	}
	peers.PrintTable(os.Stdout, all, crit)
}

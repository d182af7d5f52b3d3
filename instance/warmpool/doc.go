// Package warmpool keeps instances of one image and profile set created, and
// optionally started and ready, ahead of demand, so that a task launches in
// the time of one configuration update instead of a boot.
//
// A Pool is named; its instances carry the pool's name in
// instance.LabelID ("warmpool-<name>") and are shared by every process that
// opens a pool of that name on the same server and project. Claim hands an
// instance to exactly one caller: it writes LabelClaimed=<holder> into the
// instance's configuration with the ETag it read (compare-and-swap), and a
// concurrent claim of the same instance, from this process or another, gets
// HTTP 412 and moves on to the next candidate. Only instances marked ready
// (LabelState) and not claimed are candidates.
//
// The pool refills itself in the background, at most Config.Refill creations
// at a time, whenever fewer than Config.Size unclaimed instances exist; it
// replaces unclaimed instances older than Config.MaxAge. With Config.Background
// the instances boot and wait at the lowest CPU weight, so that a refill
// running beside the claimed instances' work takes only the CPU it leaves
// idle; the claim restores the weight the Spec asks for. A claimed instance
// belongs to its claimer, who deletes it when done. The holder recorded in a
// claim is host, PID and process start time: GC deletes the claims of holders
// on this host whose process is gone, and (with Config.ClaimTTL) claims from
// other hosts older than that. Close stops the refill and deletes the
// unclaimed instances the pool made, claiming each first so that no other
// process is handed an instance that is being deleted.
//
// A process that does not stay (a command line run, an autopkgtest virt
// server started per test) uses a Manual pool: no background upkeep, Fill
// creates what is missing and waits, Detach leaves the instances on the
// server for later processes, and Claim reports ErrEmpty at once instead of
// waiting. Instances outlive their filler; Close in another process (or
// once the filler is gone) deletes them.
package warmpool

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

type item struct {
	V  int
	ID int
}
type byV []item

func (a byV) Len() int           { return len(a) }
func (a byV) Less(i, j int) bool { return a[i].V < a[j].V }
func (a byV) Swap(i, j int)      { a[i], a[j] = a[j], a[i] }

type tc [4]uint64

func main() {
	seed := uint64(12345)
	next := func() uint64 {
		seed = seed*6364136223846793005 + 1442695040888963407
		return seed >> 33
	}
	var cases []tc
	sizes := []int{0, 1, 2, 5, 12, 13, 20, 49, 50, 51, 64, 100, 150, 200, 333, 500, 1000, 2000}
	for _, n := range sizes {
		for _, distinct := range []int{1, 2, 3, 7, 20, 1000000} {
			for _, shape := range []int{0, 1, 2, 3} {
				values := make([]int, n)
				for i := range values {
					switch shape {
					case 0:
						values[i] = int(next() % uint64(distinct))
					case 1: // ascending with noise
						values[i] = (i + int(next()%3)) % (distinct + 1)
					case 2: // descending
						values[i] = (n - i) % (distinct + 1)
					case 3: // sawtooth
						values[i] = (i % 17) % (distinct + 1)
					}
				}
				items := make([]item, n)
				for i, v := range values {
					items[i] = item{v, i}
				}
				sort.Sort(byV(items))
				h := uint64(14695981039346656037)
				for _, it := range items {
					h ^= uint64(it.ID)
					h *= 1099511628211
				}
				cases = append(cases, tc{uint64(n), uint64(distinct), uint64(shape), h})
			}
		}
	}
	out, _ := json.Marshal(cases)
	os.Stdout.Write(out)
	fmt.Fprintln(os.Stderr, len(cases), "cases")
}

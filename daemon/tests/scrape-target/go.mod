module kiln.test/scrapetarget

go 1.21

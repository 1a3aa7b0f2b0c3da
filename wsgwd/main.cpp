#include <wsgw/wsgw.h>

#include <cstdio>

int main() {
    std::printf("wsgwd %s\n", wsgw::libraryVersion());
    return 0;
}

#!/usr/bin/env bash
# Extract real scans of old black-and-white / sepia / toned / scratched photographic prints
# from two public GitHub repositories (already fetched as bare git dirs) into
# data/historical-scans/<repo>/, for testing the gray/toned/colour classifier
# (pipeline.imaging.decode). Only historical photographs are taken: no colorized or
# restored outputs, no colour photos, no engravings, no byte-identical duplicates.
#
# Usage: jobs/fetch_historical_scans.sh [MIRROR_DIR]   (default /work/.mirror)
# Expects MIRROR_DIR/<owner>+<name>/repo (a bare git dir). Idempotent: a file already
# present with the right git blob hash is left alone; anything else is (re)written.
# It never deletes files.
#
# 1) microsoft/Bringing-Old-Photos-Back-to-Life @ 33875eccf4ebcd3665cf38cc56f3a0ce563d3a9c
#    Licence as stated in the repo: MIT (LICENSE, "Copyright (c) Microsoft Corporation";
#    README: "The codes and the pretrained model in this repository are under the MIT license").
#    Taken: test_images/old_w_scratch/{a,b,c,d}.png (scratched/creased sepia prints).
#    Left out: test_images/old/*.png (colour photos: autochromes and later colour prints).
# 2) jantic/DeOldify @ 64495c33e6395c271bdb0ecedf634f09698cb15a (2018-11-04, the last commit
#    before the test images moved to Git LFS; later commits hold only LFS pointers).
#    Licence as stated in the repo: MIT (LICENSE, "Copyright (c) 2018 Jason Antic"); the README
#    says most source images came from the r/TheWayWeWere subreddit (no image licence stated).
#    Taken: 277 of the 287 files in test_images/. Left out: FadedDelores.PNG,
#    FadedDutchBabies.PNG, FadedOvermiller.PNG, FadedRacket.PNG, FadedSphynx.PNG (colorized
#    outputs), opium.jpg and wilson-slaverevivalmeeting.jpg (engravings, not photographs),
#    FatMenShop.jpg (byte-identical to FatMensShop.jpg), 1875Olds.jpg and Jane_Addams.jpg
#    (blobs absent from the snapshot).
set -euo pipefail

MIRROR="${1:-/work/.mirror}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/data/historical-scans"

BOP_GIT="$MIRROR/microsoft+Bringing-Old-Photos-Back-to-Life/repo"
BOP_COMMIT=33875eccf4ebcd3665cf38cc56f3a0ce563d3a9c
BOP_FILES=(
  test_images/old_w_scratch/a.png
  test_images/old_w_scratch/b.png
  test_images/old_w_scratch/c.png
  test_images/old_w_scratch/d.png
)

DEO_GIT="$MIRROR/jantic+DeOldify/repo"
DEO_COMMIT=64495c33e6395c271bdb0ecedf634f09698cb15a
DEO_FILES=(
  1850Geography.jpg 1860Girls.jpg 1860sSamauris.png 1864UnionSoldier.jpg
  1867MusicianConstantinople.jpg 1870Girl.jpg 1870sSphinx.jpg 1874Mexico.png 1880Paris.jpg
  1880sBrooklynBridge.jpg 1888Slum.jpg 1890BostonHospital.jpg 1890CliffHouseSF.jpg
  1890Surfer.png 1890sMedStudents.png 1890sPingPong.jpg 1890sShoeShopOhio.jpg
  1890sTouristsEgypt.png 1892WaterLillies.jpg 1895BikeMaidens.jpg 1896NewsBoyGirl.jpg
  1897BlindmansBluff.jpg 1899NycBlizzard.jpg 1899SodaFountain.jpg 1900sDaytonaBeach.png
  1900sSaloon.jpg 1901Electrophone.jpg 1907Cowboys.jpg 1908FamilyPhoto.jpg 1909Chicago.jpg
  1909ParisFirstFemaleTaxisDriver.jpg 1910Bike.jpg 1910Racket.png 1916Sweeden.jpg
  1920CobblersShopLondon.jpg 1920sDancing.jpg 1920sFamilyPhoto.jpg 1920sFarmKid.jpg
  1920sGuadalope.jpg 1925Girl.jpg 1929LondonOverFleetSt.jpg 1930sGeorgia.jpg
  1933RockefellerCenter.jpg 1938Reading.jpg 1940sBeerRiver.jpg 1946Wedding.jpg
  1948CarsGrandma.jpg 20sWoman.jpg 40sCouple.jpg AccordianKid1900Paris.jpg Agamemnon1919.jpg
  AirmanDad.jpg AnselAdamsAdobe.jpg AnselAdamsBuildings.jpg AnselAdamsChurch.jpg
  AnselAdamsWhiteChurch.jpg AnselAdamsYosemite.jpg AppalachianLoggers1901.jpg Apsaroke1908.png
  ArkansasCowboys1880s.jpg AthleticClubParis1913.jpg AustinSaloonEarly1900s.jpg
  AustriaHungaryWomen1890s.jpg BabyBigBoots.jpg Ballet1890Russia.jpg BellyLaughWWI.jpg
  BigManTavern1908NYC.jpg BombedLibraryLondon1940.jpg Boston1937.jpg BoulevardDuTemple1838.jpg
  BoxedBedEarly1900s.jpg BreadDelivery1920sIreland.jpg BritishSlum.jpg
  BritishTeaBombay1890s.png BumperCarsParis1930.jpg CafeParis1928.jpg CafeTerrace1925Paris.jpg
  CalcuttaPoliceman1920.jpg Cars1890sIreland.jpg CatWash1931.jpg Chief.jpg ChinaOpiumc1880.jpg
  ClassDivide1930sBrittain.jpg CoalDeliveryParis1915.jpg Cork1905.jpg CorkKids1910.jpg
  CottonMill.jpg CricketLondon1930.jpg Deadwood1860s.png DeepSeaDiver1915.png Depression.jpg
  Dolores1920s.jpg Donegal1907Yarn.jpg DriveThroughGiantTree.jpg DutchBabyCoupleEllis.jpg
  EastEndLondonStreetKids1901.jpg EasterNyc1911.jpg Eddie-Adams.jpg Edinburgh1920s.jpg
  EgyptColosus.jpg EgyptianWomenLate1800s.jpg ElectricScooter1915.jpeg ElephantLondon1934.png
  EmpireState1930.jpg Evelyn_Nesbit.jpg FarmWomen1895.jpg FatMenClub.jpg FatMensShop.jpg
  FreeportIL.jpg FreightTrainTeens1934.jpg FrenchVillage1950s.jpg GalwayIreland1902.jpg
  GasPrices1939.jpg GreatGrandparentsIrelandEarly1900s.jpg Greece1911.jpg
  GreekImmigrants1905.jpg HalloweenEarly1900s.jpg Harlem1932.jpg HarrodsLondon1920.jpg
  HealingTree.jpg HelenKeller.jpg Hemmingway2.jpg HerbSeller1899Paris.jpg HomeIreland1924.jpg
  HoovervilleSeattle1932.jpg HydeParkLondon1920s.jpg IceManLondon1919.jpg InuitWoman1903.png
  IrishLate1800s.jpg JerseyShore1905.jpg JudyGarland.jpeg Kabuki1870s.png KidCage1930s.png
  Killarney1910.jpg Late1800sNative.jpg LeBonMarcheParis1875.jpg LewisTomalinLondon1895.png
  LibraryOfCongress1910.jpg Lisbon1919.jpg LittleAirplane1934.jpg LivingRoom1920Sweeden.jpg
  Locomotive1880s.jpg London1850Coach.jpg London1900EastEndBlacksmith.jpg
  London1918WartimeClothesManufacture.jpg London1930sCheetah.jpg London1937.png
  LondonFireBrigadeMember1926.jpg LondonGarbageTruck1910.jpg LondonHeatWave1935.png
  LondonKidsEarly1900s.jpg LondonRailwayWork1931.jpg LondonSheep1920s.png
  LondonStreetDoctor1877.png LondonStreets1900.jpg LondonUnderground1860.jpg
  LondonsSmallestShop1900.jpg MadisonSquare1900.jpg MaioreWoman1895NZ.jpg ManPile.jpg
  MementoMori1865.jpg MetropolitanDistrictRailway1869London.jpg Mid1800sSisters.jpg
  Mormons1870s.jpg MuffinManlLondon1910.jpg NYStreetClean1906.jpg NativeAmericans.jpg
  NativeCouple1912.jpg NativeWoman1926.jpg NewZealand1860s.jpg NewspaperCivilWar1863.jpg
  NorwegianBride1920s.jpg OregonTrail1870s.jpg PaddingtonStationLondon1907.jpg
  PaddysMarketCork1900s.jpg Paris1899StreetDig.jpg Paris1920Cart.jpg Paris1926.jpg
  ParisLadies1910.jpg ParisLadies1930s.jpg ParisLate1800s.jpg ParisWomenFurs1920s.jpg
  PeddlerParis1899.jpg PetDucks1927.jpg PicadillyLate1800s.jpg PiggyBackRide.jpg
  PlanesManhattan1931.jpg PostOfficeVermont1914.png PuppyGify.jpg RepBrennanRadio1922.jpg
  Rottindean1890s.png RoyalUniversityMedStudent1900Ireland.jpg Rutherford_Hayes.jpg
  Sami1880s.jpg SanFran1851.jpg SchoolDance1956.jpg SchoolKidsConnemaraIreland1901.jpg
  Scotland1919.jpg SecondHandClothesLondonLate1800s.jpg SenecaNative1908.jpg
  ServantsBessboroughHouse1908Ireland.jpg Shack.jpg SoapBoxRacerParis1920s.jpg
  SoccerMotorcycles1923London.jpg Sphinx.jpeg StreetGramaphonePlayerLondon1920s.png
  SunHelmetsLondon1933.jpg SutroBaths1880s.jpg TV1930s.jpg Texas1938Woman.png
  TheatreGroupBombay1875.jpg TimesSquare1955.jpg TitanicGym.jpg Unidentified1855.jpg
  VictorianDragQueen1880s.png VictorianLivingRoom.jpg ViennaBoys1880s.png WWIHospital.jpg
  WWIIPeeps.jpg WWISikhs.jpg WalkingLibraryLondon1930.jpg WaltWhitman.jpg
  WaterfordIreland1909.jpg WestVirginiaHouse.jpg WorldsFair1900Paris.jpg WorriedKid1940sNyc.jpg
  ZebraCarriageLondon1900.jpg ZoologischerGarten1898.jpg abe.jpg airmen1943.jpg bicycles.jpg
  brooklyn_girls_1940s.jpg camera_man.jpg civil-war_2.jpg civil_war.jpg civil_war_3.jpg
  civil_war_4.jpg covered-wagons-traveling.jpg dorothea-lange.jpg dorothea_lange_2.jpg
  dustbowl_1.jpg dustbowl_2.jpg dustbowl_5.jpg dustbowl_people.jpg dustbowl_sd.jpg egypt-1.jpg
  egypt-2.jpg einstein_beach.jpg einstein_portrait.jpg helmut_newton-.jpg hemmingway.jpg
  jacksonville.jpg kids_pit.jpg last_samurai.jpg marilyn_portrait.jpg marilyn_woods.jpg
  marktwain.jpg migrant_mother.jpg overmiller.jpg paperboy.jpg pinkerton.jpg poverty.jpg
  redwood_lumberjacks.jpg rgs.jpg royal_family.jpg school_kids.jpg sioux.jpg
  skycrapper_lunch.jpg smoking_kid.jpg soldier_kids.jpg teddy_rubble.jpg unnamed.jpg
  w-b-yeats.jpg wh-auden.jpg women-bikers.png workers_canyon.jpg ww1_trench.jpg
)

written=0 kept=0

# extract GIT_DIR COMMIT REPO_PATH OUT_FILE
extract() {
  local git_dir=$1 commit=$2 path=$3 out=$4 blob
  blob=$(git --git-dir="$git_dir" rev-parse --verify --quiet "$commit:$path") || {
    echo "missing in $git_dir @ $commit: $path" >&2; return 1; }
  if [[ -f "$out" && "$(git hash-object "$out")" == "$blob" ]]; then
    kept=$((kept + 1)); return 0
  fi
  mkdir -p "$(dirname "$out")"
  git --git-dir="$git_dir" cat-file blob "$blob" > "$out.part"
  mv -f "$out.part" "$out"
  written=$((written + 1))
}

for d in "$BOP_GIT" "$DEO_GIT"; do
  [[ -d "$d" ]] || { echo "no git dir at $d (fetch the repository first)" >&2; exit 1; }
done
for c in "$BOP_GIT:$BOP_COMMIT" "$DEO_GIT:$DEO_COMMIT"; do
  git --git-dir="${c%:*}" cat-file -e "${c##*:}^{commit}" 2>/dev/null \
    || { echo "commit ${c##*:} not in ${c%:*}" >&2; exit 1; }
done

for p in "${BOP_FILES[@]}"; do
  extract "$BOP_GIT" "$BOP_COMMIT" "$p" "$DEST/Bringing-Old-Photos-Back-to-Life/${p#test_images/}"
done
for f in "${DEO_FILES[@]}"; do
  extract "$DEO_GIT" "$DEO_COMMIT" "test_images/$f" "$DEST/DeOldify/$f"
done

echo "historical scans: $((written + kept)) files in $DEST ($written written, $kept already there)"

// ImageJ macro: reference masks and Multi Measure means for the CALIM ROI zoo.
// Usage (headless, see regenerate.sh):
//   xvfb-run -a java -jar ij.jar -batch zoo_masks.ijm "<in_dir>/|<out_dir>/"
// in_dir holds stack.tif and zoo.zip (written by make_roi_zoo.py).
// For ROI i (0-based, ROI Manager order) it does what a lab user does:
// select the ROI on the image, Edit > Selection > Create Mask, and saves the
// "Mask" image as out_dir/mask_<iii>.tif. Then Set Measurements (mean) and
// ROI Manager > More > Multi Measure over all ROIs and frames -> multimeasure.csv.
// It also logs ImageJ's view of each ROI (rois.tsv), re-saves the ROI set as
// ImageJ writes it (zoo_imagej.zip) and records the ImageJ version.
args = split(getArgument(), "|");
indir = args[0];
outdir = args[1];
setBatchMode(true);
open(indir + "stack.tif");
stack = getImageID();
roiManager("reset");
roiManager("Open", indir + "zoo.zip");
n = roiManager("count");
info = "index\tname\ttype\tx\ty\twidth\theight\n";
for (i = 0; i < n; i++) {
    selectImage(stack);
    roiManager("select", i);
    getSelectionBounds(x, y, w, h);
    info = info + i + "\t" + Roi.getName + "\t" + selectionType() + "\t" + x + "\t" + y + "\t" + w + "\t" + h + "\n";
    run("Create Mask");
    selectImage("Mask");
    saveAs("Tiff", outdir + "mask_" + IJ.pad(i, 3) + ".tif");
    close();
}
File.saveString(info, outdir + "rois.tsv");
selectImage(stack);
run("Select None");
run("Set Measurements...", "mean stack display redirect=None decimal=9");
roiManager("Deselect");
run("Clear Results");
roiManager("multi-measure measure_all one");
saveAs("Results", outdir + "multimeasure.csv");
roiManager("Save", outdir + "zoo_imagej.zip");
File.saveString("ImageJ " + getVersion() + "\nJava " + getInfo("java.version") + "\n", outdir + "imagej_version.txt");
run("Quit");
